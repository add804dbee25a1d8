"""Scale study of the 2-bit ColBERT index: SciFact (real) plus SYNTHETIC corpora of 10k-1M documents.

The synthetic corpora are built by ``synth.py`` (real SciFact token vectors, resampled per document
and perturbed; a two-level codebook of colbert-ai's size; see its docstring and the README). Each
build and each measurement runs in its own subprocess, one heavy process at a time:

    . .venv/bin/activate
    CASCADE_CACHE_DIR=/work/cache python experiments/scale/scale.py --sizes 10000 100000 1000000

Per size, ``parts/<name>.json`` holds: build time by phase and peak RSS, bytes and bytes/token,
PLAID first-stage latency p50/p95 (each query alone, k=10 and k=100, colbert-ai's default knobs),
PLAID recall@k against exhaustive search over the same index, exhaustive ms/query, and rerank
latency for 100 and 1000 random candidates (compressed MaxSim, and 1000 pruned to 100 by centroid
interaction) beside the fp32 matmul bound of the same shape measured in the same process.
``results.md``, ``results.json``, ``slopes.json`` and ``cost_vs_size.png`` are rebuilt from the
parts (``--report-only`` rebuilds them without measuring).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCIFACT = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact")
HERE = Path(__file__).resolve().parent
log = logging.getLogger("scale")


def _threads(n: int) -> None:
    import faiss
    import torch
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _scifact(nbits: int | None):
    from cascade import load_beir
    from cascade.stages.colbert import ColBERT
    ds = load_beir(os.environ.get("SCIFACT", SCIFACT))
    stage = ColBERT(nbits=nbits, progress=False) if nbits else ColBERT(progress=False)
    stage.prepare(ds.corpus)
    return ds, stage


def open_index(path: Path):
    """The synthetic index as the library's ``ResidualIndex`` (arrays memory-mapped)."""
    from cascade.index.residual_index import ResidualIndex
    from cascade.kernels.residual import ResidualCodec
    ld = lambda n, m=None: np.load(path / f"{n}.npy", mmap_mode=m)  # noqa: E731
    centroids = ld("centroids").astype(np.float32)
    codec = ResidualCodec(centroids, ld("bucket_cutoffs"), ld("bucket_weights"), 2, centroids.shape[1])
    nbytes = sum(p.stat().st_size for p in path.glob("*.npy") if not p.name.startswith("exhaustive_"))
    return ResidualIndex(codec, ld("codes", "r"), ld("residuals", "r"), ld("norm_deltas", "r"), ld("offsets"),
                         ld("ivf_docs"), ld("ivf_offsets"), {}, nbytes)


# ------------------------------------------------------------------------------ build
def build(size: int, out_dir: Path, seed: int, threads: int) -> dict:
    sys.path.insert(0, str(HERE))
    import synth
    _threads(threads)
    t = time.perf_counter()
    _, c2 = _scifact(2)
    _, c0 = _scifact(None)
    t_load = time.perf_counter() - t
    report = synth.build(size, out_dir, c0._index.tokens, np.asarray(c0._index.offsets, np.int64),
                         np.asarray(c2._index.codes), c2._index.codec, seed=seed)
    report["build_s"]["load_inputs"] = t_load
    report["threads"] = threads
    return report


# ------------------------------------------------------------------------------ measure
def _rss() -> dict:
    """Current anonymous and file-backed (memory-mapped index pages) resident MiB, from /proc."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status
            if line.startswith(("RssAnon", "RssFile"))}


def _warm(index_dir: Path) -> list[str]:
    """Read the index files once, smallest first, while they fit in half the available memory, so
    that every size is timed from the page cache as far as it fits: the 1M index's residuals (23 GB)
    do not fit in this machine's 23 GiB and are read from disk as needed. Returns the files read."""
    files = sorted(index_dir.glob("*.npy"), key=lambda f: f.stat().st_size)
    avail = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemAvailable")), 0)
    read, total = [], 0
    for f in files:
        total += f.stat().st_size
        if total > avail / 2:
            break
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
        read.append(f.name)
    return read


def _pct(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean())}


def _recall(got: np.ndarray, ref: np.ndarray, depth: int) -> float:
    out = []
    for g, r in zip(got, ref):
        r = set(r[:depth][r[:depth] >= 0].tolist())
        out.append(len(r & set(g[:depth][g[:depth] >= 0].tolist())) / max(len(r), 1))
    return float(np.mean(out))


def measure(index_dir: Path | None, num_queries: int, sub: int, seed: int, threads: int, index=None) -> dict:
    """The query table for SciFact (``index_dir`` None), a synth.py index in ``index_dir``, or an ``index``
    the library opened (``library_build.py``; its files in ``index_dir``)."""
    import torch

    from cascade.kernels.maxsim import maxsim
    from cascade.kernels.plaid import default_search_params, exhaustive_search, plaid_search, prune_candidates
    _threads(threads)
    ds, c2 = _scifact(2)
    library = index is not None
    index = index if library else c2._index if index_dir is None else open_index(index_dir)
    warmed = _warm(index_dir) if index_dir is not None else None
    queries, mask = c2.encoder.encode_queries(ds.query_texts[:num_queries])
    queries, mask = np.asarray(queries, np.float32), np.asarray(mask, bool)
    offsets = np.asarray(index.offsets, np.int64)
    num_docs, num_tokens = len(offsets) - 1, int(offsets[-1])
    scorers = {dt: index.scorer(dt) for dt in ("float32", "bfloat16")}
    scorer = scorers["float32"]

    def exact_for(dtype: str):
        def exact_fn(q, m, doc_idx):
            return maxsim(q, m, None, offsets, doc_idx, scorer=scorers[dtype], compute_dtype=dtype)
        return exact_fn

    res: dict = {"page_cache_warmed": warmed, "num_docs": num_docs, "num_tokens": num_tokens,
                 "num_queries": len(queries),
                 "mean_valid_query_tokens": float(mask.sum(1).mean()), "threads": threads,
                 "index_bytes": int(index.nbytes), "bytes_per_token": index.nbytes / num_tokens,
                 "num_centroids": index.codec.num_centroids}
    if index_dir is None:
        res.update(synthetic=False, payload_bytes_per_token=index.codes.itemsize + index.residuals.shape[1] + 2,
                   build_s={"compress_cached": index.meta.get("compress_seconds")},
                   ivf_pairs=int(len(index.ivf_docs)),
                   mean_docs_per_centroid=float(len(index.ivf_docs) / index.codec.num_centroids))
    plaid, found = {}, {}
    for dtype, suffix in (("float32", ""), ("bfloat16", "_bf16")):
        # bf16 = ColBERT(compute_dtype="bfloat16"): centroid scores and exact MaxSim matmuls in bf16
        cents = index.codec.centroids if dtype == "float32" else index.codec.centroids_tensor(torch.bfloat16)
        for k in (10, 100):
            params, name = default_search_params(k), f"k{k}{suffix}"
            args = (cents, index.codes, offsets, index.ivf_docs, index.ivf_offsets, k)
            plaid_search(queries[:2], mask[:2], *args, exact_fn=exact_for(dtype), **params)  # warm-up
            la0, times, idx = load_avg(), [], []
            for q in range(len(queries)):
                t = time.perf_counter()
                i, _ = plaid_search(queries[q:q + 1], mask[q:q + 1], *args, exact_fn=exact_for(dtype), **params)
                times.append(time.perf_counter() - t)
                idx.append(i[0])
            found[name] = np.stack(idx)
            plaid[name] = {**_pct(times), "params": params, "compute_dtype": dtype, "load_avg": [la0, load_avg()],
                           "rss_after_mib": _rss()}
            log.info("%d docs: PLAID %s p50 %.1f ms p95 %.1f ms", num_docs, name, plaid[name]["p50_ms"],
                     plaid[name]["p95_ms"])

    nq = min(sub, len(queries))
    # the exhaustive top 100 is kept beside a synthetic index, so a re-measure reuses it (same queries)
    saved = index_dir / f"exhaustive_top100_q{nq}.npy" if index_dir is not None else None
    if library:  # never add files to a library artifact's folder: beside it
        saved = index_dir.parent / f"{index_dir.name}.exhaustive_top100_q{nq}.npy"
    la0, t = load_avg(), time.perf_counter()
    reused = saved is not None and saved.is_file()
    if reused:
        ex_idx, ex_s = np.load(saved), float(np.load(saved.with_suffix(".seconds.npy")))
    else:
        ex_idx, _ = exhaustive_search(queries[:nq], mask[:nq], lambda a, b: index.decompress_rows(np.arange(a, b)),
                                      offsets, k=100)
        ex_s = time.perf_counter() - t
        if saved is not None:
            np.save(saved, ex_idx)
            np.save(saved.with_suffix(".seconds.npy"), np.float64(ex_s))
    res["exhaustive"] = {"queries": nq, "batch_s": ex_s, "ms_per_query": ex_s / nq * 1e3, "load_avg": [la0, load_avg()],
                         "rss_after_mib": _rss(), "reused": reused}
    log.info("%d docs: exhaustive %.0f ms/query (%d queries in one pass)", num_docs, ex_s / nq * 1e3, nq)
    for name, ids in found.items():
        depth = int(name[1:].split("_")[0])
        plaid[name][f"recall@{depth}_vs_exhaustive"] = _recall(ids[:nq], ex_idx, depth)
        plaid[name]["recall_queries"] = nq
    res["plaid"] = plaid

    rng = np.random.default_rng(seed)
    lengths = np.diff(offsets)
    nr = min(len(queries), 50)
    rerank = {}
    for n in (100, 1000):
        cand = np.stack([np.sort(rng.choice(num_docs, min(n, num_docs), replace=False)) for _ in range(nr)])
        maxsim(queries[:2], mask[:2], None, offsets, cand[:2], scorer=scorer)  # warm-up
        la0, t = load_avg(), time.perf_counter()
        maxsim(queries[:nr], mask[:nr], None, offsets, cand, scorer=scorer)
        ms = (time.perf_counter() - t) / nr * 1e3
        row = {"candidates": cand.shape[1], "queries": nr, "ms_per_query": ms,
               "mean_tokens_per_query": float(lengths[cand].sum(1).mean())}
        if n == 1000:
            t = time.perf_counter()
            kept = prune_candidates(queries[:nr], mask[:nr], index.codec.centroids, index.codes, offsets, cand, 100)
            maxsim(queries[:nr], mask[:nr], None, offsets, kept, scorer=scorer)
            row["pruned_to_100_ms_per_query"] = (time.perf_counter() - t) / nr * 1e3
        bound = 0.0
        for q in range(-1, nr):  # one random matrix pair at a time (all at once would take ~18 GB); -1 warms up
            a = torch.randn(int(lengths[cand[max(q, 0)]].sum()), queries.shape[2])
            b = torch.randn(queries.shape[2], int(mask[max(q, 0)].sum()))
            t = time.perf_counter()
            a @ b
            bound += (time.perf_counter() - t) if q >= 0 else 0.0
        row["fp32_matmul_bound_ms_per_query"] = bound / nr * 1e3
        row["ratio_to_bound"] = ms / row["fp32_matmul_bound_ms_per_query"]
        row["load_avg"], row["rss_after_mib"] = [la0, load_avg()], _rss()
        rerank[str(n)] = row
        del a, b
        log.info("%d docs: rerank %d: %.1f ms/query (bound %.1f)", num_docs, n, ms,
                 row["fp32_matmul_bound_ms_per_query"])
    res["rerank"] = rerank
    if index_dir is not None and not library:  # after the timings: the exact assignment below is CPU-heavy
        sys.path.insert(0, str(HERE))
        import synth
        _, c0 = _scifact(None)
        res["assignment_check"] = {**synth.check_built(index.codec, c0._index.tokens, np.asarray(c2._index.codes),
                                                       c2._index.codec.num_centroids, seed),
                                   "how": "synth.check_built: 4096 fresh random tokens"}
    # ru_maxrss counts the index's memory-mapped pages too (up to the whole index after exhaustive search)
    res["peak_rss_measure_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


# ------------------------------------------------------------------------------ report
def _name(r: dict) -> str:
    return "scifact" if not r["synthetic"] else f"synthetic_{r['num_docs']}"


def report(out: Path) -> None:
    parts = sorted((json.loads(p.read_text()) for p in (out / "parts").glob("*.json")), key=lambda r: r["num_docs"])
    (out / "results.json").write_text(json.dumps(parts, indent=1))
    hdr = ("| corpus | docs | tokens | centroids | build s | build peak RSS GiB | index GiB | B/token "
           "| PLAID k=10 p50 / p95 ms, fp32 (bf16) | PLAID k=100 p50 / p95 ms, fp32 (bf16) | R@10 fp32 (bf16) "
           "| R@100 fp32 (bf16) | exhaustive ms/q "
           "| rerank 100 ms/q (bound) | rerank 1000 ms/q (bound) | 1000 pruned to 100 ms/q | load (1 min) |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in parts:
        b = r.get("build_s", {})
        build = f"{b['total']:.0f}" if r["synthetic"] else f"(cached; compress {b.get('compress_cached')})"
        rss = f"{r['peak_rss_build_mib'] / 1024:.1f}" if r["synthetic"] else "-"
        p10, p100, ex, r1, r2 = (r["plaid"]["k10"], r["plaid"]["k100"], r["exhaustive"], r["rerank"]["100"],
                                 r["rerank"]["1000"])
        b10, b100 = r["plaid"]["k10_bf16"], r["plaid"]["k100_bf16"]
        loads = [pair[0] for blk in (p10, p100, b10, b100, ex, r1, r2) for pair in blk["load_avg"]]
        lines.append(
            f"| {'synthetic' if r['synthetic'] else 'SciFact (real)'} | {r['num_docs']:,} | {r['num_tokens']:,} "
            f"| {r['num_centroids']:,} | {build} | {rss} | {r['index_bytes'] / 2**30:.2f} | {r['bytes_per_token']:.1f} "
            f"| {p10['p50_ms']:.1f} / {p10['p95_ms']:.1f} ({b10['p50_ms']:.1f} / {b10['p95_ms']:.1f}) "
            f"| {p100['p50_ms']:.1f} / {p100['p95_ms']:.1f} ({b100['p50_ms']:.1f} / {b100['p95_ms']:.1f}) "
            f"| {p10['recall@10_vs_exhaustive']:.3f} ({b10['recall@10_vs_exhaustive']:.3f}) "
            f"| {p100['recall@100_vs_exhaustive']:.3f} ({b100['recall@100_vs_exhaustive']:.3f}) "
            f"| {ex['ms_per_query']:,.0f} ({ex['queries']} q) "
            f"| {r1['ms_per_query']:.1f} ({r1['fp32_matmul_bound_ms_per_query']:.1f}) "
            f"| {r2['ms_per_query']:.1f} ({r2['fp32_matmul_bound_ms_per_query']:.1f}) "
            f"| {r2['pruned_to_100_ms_per_query']:.1f} | {min(loads):.1f}-{max(loads):.1f} |")
    sizes = np.array([r["num_docs"] for r in parts], float)
    series = {"PLAID k=10 p50": [r["plaid"]["k10"]["p50_ms"] for r in parts],
              "PLAID k=10 p50, bf16": [r["plaid"]["k10_bf16"]["p50_ms"] for r in parts],
              "PLAID k=100 p50": [r["plaid"]["k100"]["p50_ms"] for r in parts],
              "exhaustive": [r["exhaustive"]["ms_per_query"] for r in parts],
              "rerank 1000": [r["rerank"]["1000"]["ms_per_query"] for r in parts],
              "rerank 100": [r["rerank"]["100"]["ms_per_query"] for r in parts]}
    slopes = {}
    if len(parts) >= 2:
        slopes = {name: float(np.polyfit(np.log(sizes), np.log(ys), 1)[0]) for name, ys in series.items()}
        lines += ["", "Log-log slope of ms/query against corpus size (least squares over all rows; 1 = linear):", ""]
        lines += [f"- {name}: {s:.2f}" for name, s in slopes.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "slopes.json").write_text(json.dumps(slopes, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for (name, ys), m in zip(series.items(), "oxsD^v"):
        ax.plot(sizes, ys, marker=m, label=name)
    for name in ("PLAID k=10 p50", "exhaustive"):
        ax.plot(sizes, series[name][0] * sizes / sizes[0], ":", color="gray")
    ax.plot([], [], ":", color="gray", label="linear growth from the first point")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("documents (first: SciFact; others synthetic)")
    ax.set_ylabel("ms / query (CPU, 2 threads)")
    ax.set_title("2-bit ColBERT index: query cost against corpus size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cost_vs_size.png", dpi=120)
    log.info("\n%s", "\n".join(lines))


# ------------------------------------------------------------------------------ main
def _child(me: list[str], *extra: str) -> None:
    subprocess.run(me + list(extra), check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=100, help="SciFact test queries timed one by one")
    ap.add_argument("--sub-queries", type=int, default=20, help="queries for the exhaustive reference (recall)")
    ap.add_argument("--sub-queries-1m", type=int, default=10, help="the same at 1M documents and more")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index-root", type=Path, default=Path("/tmp/cascade_scale"),
                    help="where the synthetic indexes are built (deleted after measuring unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic indexes (and reuse kept ones)")
    ap.add_argument("--no-scifact", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--_build", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_measure", type=str, help=argparse.SUPPRESS)
    ap.add_argument("--_dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_json", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_sub", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args._build:
        args._json.write_text(json.dumps(build(args._build, args._dir, args.seed, args.threads)))
        return
    if args._measure:
        d = None if args._measure == "scifact" else args._dir
        args._json.write_text(json.dumps(measure(d, args.queries, args._sub, args.seed, args.threads)))
        return
    parts = args.out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--queries", str(args.queries), "--seed", str(args.seed),
          "--threads", str(args.threads)]
    if not args.report_only:
        if not args.no_scifact:
            tmp = parts / ".scifact.tmp"
            _child(me, "--_measure", "scifact", "--_json", str(tmp), "--_sub", str(args.sub_queries))
            tmp.replace(parts / "scifact.json")
        for size in args.sizes:
            d = args.index_root / f"synthetic_{size}"
            build_json = d / "build.json"
            if not (args.keep and build_json.is_file()):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                t = time.perf_counter()
                _child(me, "--_build", str(size), "--_dir", str(d / "index"), "--_json", str(d / "build.tmp"))
                b = json.loads((d / "build.tmp").read_text())
                b["build_wall_s_incl_startup"] = time.perf_counter() - t
                build_json.write_text(json.dumps(b))
            sub = args.sub_queries_1m if size >= 1_000_000 else args.sub_queries
            _child(me, "--_measure", "synthetic", "--_dir", str(d / "index"), "--_json", str(d / "measure.json"),
                   "--_sub", str(sub))
            m = json.loads((d / "measure.json").read_text())
            (parts / f"synthetic_{size}.json").write_text(json.dumps(
                {**json.loads(build_json.read_text()), **m, "synthetic": True}, indent=1))
            if not args.keep:
                shutil.rmtree(d, ignore_errors=True)
    report(args.out)


if __name__ == "__main__":
    main()
