"""Scale study of the 2-bit compressed ColBERT index: SciFact (real) plus SYNTHETIC corpora.

Synthetic documents: length drawn from SciFact's document-length distribution; every token
is a real SciFact token vector (a uniformly random row of the cached fp16 MiniLM token
index) plus isotropic Gaussian noise (sigma, default 0.0247 -> mean cosine ~0.9 to its
source), renormalized. They are compressed with the SciFact 2-bit codec (16,384 centroids,
trained on SciFact; k-means is NOT retrained for the synthetic corpora), streamed chunk by
chunk into memmaps under a temp dir in /tmp, then the IVF is built with ``build_ivf``.

Each size's build and measurement run in their own subprocess (one heavy process at a time).

    . .venv/bin/activate
    CASCADE_CACHE_DIR=/work/cache python experiments/scale/scale.py \
        --sizes 10000 20000 --queries 50 --out experiments/scale

Per-size results are written to ``<out>/parts/<name>.json`` as they finish; the final
``results.json``, ``results.md`` and ``cost_vs_size.png`` are assembled from all parts
(``--report-only`` rebuilds them without measuring).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCIFACT = "/work/shared/data/scifact"
SIGMA = 0.0247
CHUNK_DOCS = 256
THREADS = 1


def _threads(n: int) -> None:
    import faiss
    import torch
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def _load(nbits: int | None):
    from cascade import load_beir
    from cascade.stages.colbert import ColBERT
    ds = load_beir(SCIFACT)
    c = ColBERT(nbits=nbits, progress=False) if nbits else ColBERT(progress=False)
    c.prepare(ds.corpus)
    return ds, c


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------ build
def build(size: int, out_dir: Path, seed: int, sigma: float, chunk_docs: int) -> dict:
    from cascade.kernels.plaid import build_ivf
    _threads(THREADS)
    t_load = time.perf_counter()
    _, c2 = _load(2)
    codec = c2._index.codec
    _, c0 = _load(None)
    src, src_off = c0._index.tokens, np.asarray(c0._index.offsets, np.int64)
    t_load = time.perf_counter() - t_load
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    src_mmap = getattr(src, "_mmap", None) or getattr(getattr(src, "base", None), "_mmap", None)
    rng = np.random.default_rng(seed)
    lengths = rng.choice(np.diff(src_off), size=size, replace=True).astype(np.int64)
    offsets = np.zeros(size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = np.lib.format.open_memmap(out_dir / "codes.npy", "w+", np.uint16, (total,))
    residuals = np.lib.format.open_memmap(out_dir / "residuals.npy", "w+", np.uint8,
                                          (total, codec.dim * codec.nbits // 8))
    t_gen = t_comp = 0.0
    cos_sum, cos_n = 0.0, 0
    t_start = time.perf_counter()
    for d0 in range(0, size, chunk_docs):
        d1 = min(size, d0 + chunk_docs)
        a, b = int(offsets[d0]), int(offsets[d1])
        t = time.perf_counter()
        rows = rng.integers(0, len(src), b - a)
        order = np.argsort(rows)
        x = np.empty((b - a, codec.dim), np.float32)
        x[order] = src[rows[order]]  # sorted gather from the memmap
        if src_mmap is not None:  # drop the source's file pages from this process's RSS
            src_mmap.madvise(__import__("mmap").MADV_DONTNEED)
        base = x.copy() if d0 == 0 else None
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if base is not None:
            cos = np.einsum("ij,ij->i", x, base / np.linalg.norm(base, axis=1, keepdims=True))
            cos_sum, cos_n = float(cos.sum()), len(cos)
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        cc, rr = codec.compress(x)
        codes[a:b] = cc.astype(np.uint16)
        residuals[a:b] = rr
        t_comp += time.perf_counter() - t
        del x, cc, rr
        if (d0 // chunk_docs) % 8 == 0:
            el = time.perf_counter() - t_start
            print(f"[build {size}] {d1}/{size} docs {b}/{total} tokens {el:.0f}s "
                  f"({b / el:.0f} tok/s) load {load_avg()}", flush=True)
    codes.flush(), residuals.flush()
    t = time.perf_counter()
    ivf_docs, ivf_offsets = build_ivf(codes, offsets, codec.num_centroids)
    t_ivf = time.perf_counter() - t
    np.save(out_dir / "ivf_docs.npy", ivf_docs)
    np.save(out_dir / "ivf_offsets.npy", ivf_offsets)
    np.save(out_dir / "offsets.npy", offsets)
    # centroids stored as the library's cached index stores them (float16 on disk)
    np.save(out_dir / "centroids.npy", np.asarray(codec.centroids, np.float16))
    np.save(out_dir / "bucket_cutoffs.npy", np.asarray(codec.bucket_cutoffs))
    np.save(out_dir / "bucket_weights.npy", np.asarray(codec.bucket_weights))
    del codes, residuals
    files = {p.name: p.stat().st_size for p in out_dir.glob("*.npy")}
    nbytes = sum(files.values())
    return {
        "num_docs": size, "num_tokens": total, "synthetic": True, "sigma": sigma, "seed": seed,
        "mean_cos_to_source": cos_sum / max(cos_n, 1), "cos_sample_tokens": cos_n,
        "build_s": {"generate": t_gen, "compress": t_comp, "ivf": t_ivf, "load_inputs": t_load,
                    "total_excl_load": t_gen + t_comp + t_ivf},
        "compress_tokens_per_s": total / t_comp, "build_tokens_per_s": total / (t_gen + t_comp + t_ivf),
        "index_bytes": nbytes, "files": files, "bytes_per_token": nbytes / total,
        "payload_bytes_per_token": 2 + codec.dim * codec.nbits // 8,
        "peak_rss_after_loading_inputs_mib": rss_after_load,
        "peak_rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg_build_end": load_avg(), "threads": THREADS,
    }


# ------------------------------------------------------------------------------ measure
def _pct(v: list[float]) -> dict:
    a = np.asarray(v) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean())}


def measure(index_dir: Path | None, num_queries: int, seed: int, sub_queries: int) -> dict:
    import torch
    from cascade.kernels.maxsim import maxsim
    from cascade.kernels.plaid import default_search_params, exhaustive_search, plaid_search
    from cascade.kernels.residual import ResidualCodec
    _threads(THREADS)
    ds, c = _load(2)
    codec = c._index.codec
    queries, mask = c.encoder.encode_queries(ds.query_texts[:num_queries])
    queries, mask = np.asarray(queries, np.float32), np.asarray(mask, bool)
    res: dict = {}
    if index_dir is None:
        ix = c._index
        codes, residuals, offsets = ix.codes, ix.residuals, np.asarray(ix.offsets, np.int64)
        ivf_docs, ivf_offsets = ix.ivf_docs, ix.ivf_offsets
        res.update(num_docs=len(offsets) - 1, num_tokens=int(offsets[-1]), synthetic=False,
                   index_bytes=int(ix.nbytes), bytes_per_token=ix.nbytes / int(offsets[-1]),
                   payload_bytes_per_token=codes.itemsize + residuals.shape[1],
                   build_s={"compress": c._index.meta.get("compress_seconds")})
    else:
        ld = lambda n, m=None: np.load(index_dir / f"{n}.npy", mmap_mode=m)  # noqa: E731
        codes, residuals, offsets = ld("codes", "r"), ld("residuals", "r"), ld("offsets")
        ivf_docs, ivf_offsets = ld("ivf_docs"), ld("ivf_offsets")
        codec = ResidualCodec(ld("centroids"), ld("bucket_cutoffs"), ld("bucket_weights"), codec.nbits, codec.dim)
    num_docs = len(offsets) - 1

    def gather(rows):
        return torch.from_numpy(codec.decompress(np.asarray(codes[rows]), np.asarray(residuals[rows])))

    def exact_fn(q, m, doc_idx):
        return maxsim(q, m, None, offsets, doc_idx, gather=gather)

    def tokens_fn(a, b):
        return codec.decompress(np.asarray(codes[a:b]), np.asarray(residuals[a:b]))

    # PLAID, each query alone
    plaid = {}
    for k in (10, 100):
        params = default_search_params(k)
        plaid_search(queries[:1], mask[:1], codec.centroids, codes, offsets, ivf_docs, ivf_offsets, k,
                     exact_fn=exact_fn, **params)  # warm-up
        la0, times, idx = load_avg(), [], []
        for q in range(len(queries)):
            t = time.perf_counter()
            i, _ = plaid_search(queries[q:q + 1], mask[q:q + 1], codec.centroids, codes, offsets, ivf_docs,
                                ivf_offsets, k, exact_fn=exact_fn, **params)
            times.append(time.perf_counter() - t)
            idx.append(i[0])
        plaid[k] = {**_pct(times), "params": params, "load_avg": [la0, load_avg()], "_idx": np.stack(idx)}
        print(f"[measure {num_docs}] plaid k={k} p50 {plaid[k]['p50_ms']:.1f} ms load {load_avg()}", flush=True)

    # exhaustive reference: all queries in one batch, and one query alone
    la0 = load_avg()
    t = time.perf_counter()
    nq = min(sub_queries, len(queries))
    ex_idx, _ = exhaustive_search(queries[:nq], mask[:nq], tokens_fn, offsets, k=100)
    ex_batch = time.perf_counter() - t
    t = time.perf_counter()
    exhaustive_search(queries[:1], mask[:1], tokens_fn, offsets, k=100)
    ex_single = time.perf_counter() - t
    exh = {"batch_ms_per_query": ex_batch / nq * 1e3, "batch_s": ex_batch, "batch_queries": nq,
           "single_query_ms": ex_single * 1e3, "load_avg": [la0, load_avg()]}
    print(f"[measure {num_docs}] exhaustive {exh['batch_ms_per_query']:.1f} ms/q (batch), "
          f"{exh['single_query_ms']:.0f} ms single, load {load_avg()}", flush=True)

    def recall(pidx, depth):
        r = []
        for q in range(nq):
            ref = set(ex_idx[q, :depth][ex_idx[q, :depth] >= 0].tolist())
            got = set(pidx[q, :depth][pidx[q, :depth] >= 0].tolist())
            r.append(len(ref & got) / max(len(ref), 1))
        return float(np.mean(r))

    plaid_out = {}
    for k in (10, 100):
        plaid_out[f"k{k}"] = {kk: v for kk, v in plaid[k].items() if kk != "_idx"}
        plaid_out[f"k{k}"][f"recall@{k}_vs_exhaustive"] = recall(plaid[k]["_idx"], k)

    # rerank random candidates with the compressed MaxSim, and the fp32 matmul bound
    rng = np.random.default_rng(seed)
    lengths = np.diff(offsets)
    rerank = {}
    for n in (100, 1000):
        n_eff = min(n, num_docs)
        cand = np.stack([rng.choice(num_docs, n_eff, replace=False) for _ in range(nq)])
        maxsim(queries[:2], mask[:2], None, offsets, cand[:2], gather=gather)  # warm-up
        la0 = load_avg()
        t = time.perf_counter()
        maxsim(queries[:nq], mask[:nq], None, offsets, cand, gather=gather)
        t_ms = (time.perf_counter() - t) / nq * 1e3
        # fp32 bound: one (tokens x 384) @ (384 x Lq) matmul per query on random data
        mats = [(torch.randn(int(lengths[cand[q]].sum()), queries.shape[2]),
                 torch.randn(queries.shape[2], int(mask[q].sum()))) for q in range(nq)]
        for a, b in mats[:2]:
            a @ b
        t = time.perf_counter()
        for a, b in mats:
            a @ b
        mm_ms = (time.perf_counter() - t) / nq * 1e3
        del mats
        rerank[n] = {"candidates": n_eff, "maxsim_ms_per_query": t_ms, "fp32_matmul_bound_ms_per_query": mm_ms,
                     "ratio": t_ms / mm_ms, "mean_tokens_per_query": float(lengths[cand].sum(1).mean()),
                     "load_avg": [la0, load_avg()]}
        print(f"[measure {num_docs}] rerank {n}: {t_ms:.1f} ms/q vs matmul {mm_ms:.2f} ms/q", flush=True)
    res.update(reference_and_rerank_queries=nq, plaid=plaid_out, exhaustive=exh, rerank={str(k): v for k, v in rerank.items()},
               num_queries=len(queries), mean_valid_query_tokens=float(mask.sum(1).mean()),
               peak_rss_measure_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               threads=THREADS)
    return res


# ------------------------------------------------------------------------------ report
def report(out: Path) -> None:
    parts = sorted((json.loads(p.read_text()) for p in (out / "parts").glob("*.json")),
                   key=lambda r: r["num_docs"])
    for r in parts:  # runs before the fix saved the centroids as float32: count them as float16,
        f = r.get("files", {})  # as the library's cache stores them (the SciFact row does)
        if f.get("centroids.npy", 0) > 25_000_000:
            r["index_bytes"] -= f["centroids.npy"] - (f["centroids.npy"] - 128) // 2 - 128
            r["bytes_per_token"] = r["index_bytes"] / r["num_tokens"]
            r["note"] = "centroids counted as float16 (12.6 MB), as the cached index stores them"
    (out / "results.json").write_text(json.dumps(parts, indent=1))
    hdr = ("| corpus | docs | tokens | build s (gen / compress / IVF) | peak RSS build MiB | bytes/token "
           "(payload) | index MiB | PLAID k=10 p50/p95 ms | PLAID k=100 p50/p95 ms | R@10 | R@100 "
           "| exhaustive ms/q (batch; 1 query) | rerank 100 ms/q (fp32 bound, ratio) "
           "| rerank 1000 ms/q (fp32 bound, ratio) | load avg (1 min) |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in parts:
        b = r.get("build_s", {})
        if r["synthetic"]:
            bs = f"{b['generate']:.0f} / {b['compress']:.0f} / {b['ivf']:.1f}"
            rss = f"{r['peak_rss_build_mib']:.0f}"
        else:
            bs = f"(cached; compress {b.get('compress')} s)"
            rss = "n/a (cached)"
        p10, p100 = r["plaid"]["k10"], r["plaid"]["k100"]
        ex, r1, r2 = r["exhaustive"], r["rerank"]["100"], r["rerank"]["1000"]
        loads = [x for blk in (p10, p100, ex, r1, r2) for pair in blk["load_avg"] for x in pair[:1]]
        lines.append(
            f"| {'synthetic' if r['synthetic'] else 'SciFact (real)'} | {r['num_docs']:,} | {r['num_tokens']:,} "
            f"| {bs} | {rss} | {r['bytes_per_token']:.1f} ({r['payload_bytes_per_token']}) "
            f"| {r['index_bytes'] / 2**20:.0f} | {p10['p50_ms']:.0f} / {p10['p95_ms']:.0f} "
            f"| {p100['p50_ms']:.0f} / {p100['p95_ms']:.0f} | {p10['recall@10_vs_exhaustive']:.3f} "
            f"| {p100['recall@100_vs_exhaustive']:.3f} | {ex['batch_ms_per_query']:.0f}; {ex['single_query_ms']:.0f} "
            f"| {r1['maxsim_ms_per_query']:.1f} ({r1['fp32_matmul_bound_ms_per_query']:.2f}, {r1['ratio']:.0f}x) "
            f"| {r2['maxsim_ms_per_query']:.0f} ({r2['fp32_matmul_bound_ms_per_query']:.1f}, {r2['ratio']:.0f}x) "
            f"| {min(loads):.1f}-{max(loads):.1f} |")
    sizes = np.array([r["num_docs"] for r in parts], float)
    series = {"PLAID k=10 p50": [r["plaid"]["k10"]["p50_ms"] for r in parts],
              "PLAID k=100 p50": [r["plaid"]["k100"]["p50_ms"] for r in parts],
              "exhaustive (batch)": [r["exhaustive"]["batch_ms_per_query"] for r in parts],
              "rerank 1000": [r["rerank"]["1000"]["maxsim_ms_per_query"] for r in parts]}
    slopes = {}
    if len(parts) >= 2:
        for name, ys in series.items():
            slopes[name] = float(np.polyfit(np.log(sizes), np.log(ys), 1)[0])
        lines += ["", "Log-log slope of ms/query vs corpus size (least squares over all rows; 1 = linear):", ""]
        lines += [f"- {name}: {s:.2f}" for name, s in slopes.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    summary = json.loads((out / "results.json").read_text())
    (out / "slopes.json").write_text(json.dumps(slopes, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (name, ys), m in zip(series.items(), "osD^"):
        ax.plot(sizes, ys, marker=m, label=name)
    for name in ("PLAID k=10 p50", "exhaustive (batch)"):
        y0 = series[name][0]
        ax.plot(sizes, y0 * sizes / sizes[0], ":", color="gray")
    ax.plot([], [], ":", color="gray", label="linear growth from first point")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("corpus size (documents; first = SciFact, others synthetic)")
    ax.set_ylabel("ms / query (CPU, 1 thread)")
    ax.set_title("2-bit ColBERT index: cost vs corpus size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cost_vs_size.png", dpi=120)
    print("\n".join(lines))
    del summary


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sub-queries", type=int, default=20,
                    help="first N queries for the exhaustive reference (and recall) and the rerank timings")
    ap.add_argument("--sigma", type=float, default=SIGMA)
    ap.add_argument("--no-scifact", action="store_true", help="skip the real SciFact row")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--_build", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_measure", type=str, help=argparse.SUPPRESS)
    ap.add_argument("--_dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._build:
        args._json.write_text(json.dumps(build(args._build, args._dir, args.seed, args.sigma, CHUNK_DOCS)))
        return
    if args._measure:
        d = None if args._measure == "scifact" else args._dir
        args._json.write_text(json.dumps(measure(d, args.queries, args.seed, args.sub_queries)))
        return
    out = args.out
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        me = [sys.executable, str(Path(__file__).resolve()), "--queries", str(args.queries),
              "--seed", str(args.seed), "--sub-queries", str(args.sub_queries), "--sigma", str(args.sigma)]
        if not args.no_scifact:
            tmpj = out / "parts" / ".scifact.tmp"
            subprocess.run(me + ["--_measure", "scifact", "--_json", str(tmpj)], check=True)
            tmpj.replace(out / "parts" / "scifact.json")
        for size in args.sizes:
            tmp = Path(tempfile.mkdtemp(prefix=f"cascade_scale_{size}_", dir="/tmp"))
            try:
                bj, mj = tmp / "build.json", tmp / "measure.json"
                # the build runs alone in a child; its peak RSS is read back from the OS
                before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                t = time.perf_counter()
                subprocess.run(me + ["--_build", str(size), "--_dir", str(tmp / "index"), "--_json", str(bj)],
                               check=True)
                wall = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                b = json.loads(bj.read_text())
                b["build_wall_s_incl_startup"] = wall
                # RUSAGE_CHILDREN is the max over all children so far; the child's own figure is exact
                b["peak_rss_build_mib"] = b["peak_rss_self_mib"]
                b["peak_rss_children_mib"] = after / 1024 if after > before else None
                subprocess.run(me + ["--_measure", "synthetic", "--_dir", str(tmp / "index"), "--_json", str(mj)],
                               check=True)
                m = json.loads(mj.read_text())
                for key in ("num_docs", "num_tokens", "synthetic"):
                    m.pop(key, None)
                (out / "parts" / f"synthetic_{size}.json").write_text(json.dumps({**b, **m}, indent=1))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    report(out)


if __name__ == "__main__":
    main()
