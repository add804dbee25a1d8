"""Profile coarse-to-fine centroid assignment against exact assignment, on SYNTHETIC 1M-corpus tokens.

The codebook is the library's two-level k-means (``cascade.kernels.kmeans.train_centroids``) on a
sample of the synthetic corpus (``synth_pass.py``), of colbert-ai's size for the corpus. Fresh tokens
(other documents) are then assigned exactly (faiss flat, on a subsample) and coarse-to-fine with
several (cells, nprobe, rescore) settings. Per setting: tokens/s (wall and process CPU), the fraction
of tokens given the exact nearest centroid, and the mean cosine of decoded (2-bit) to original vectors.

    CASCADE_CACHE_DIR=/work/cache python experiments/scale/assign_profile.py --tokens-index \\
        /work/cache/colbert/<key> --out experiments/scale/assign_profile.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
log = logging.getLogger("assign_profile")


def clock():
    return time.perf_counter(), time.process_time()


def since(t0) -> dict:
    wall, cpu = clock()
    return {"wall_s": round(wall - t0[0], 3), "cpu_s": round(cpu - t0[1], 3), "load_avg": list(os.getloadavg())}


def docs_for(synth, rng, want_tokens: int, exclude: np.ndarray | None = None) -> np.ndarray:
    order = rng.permutation(synth.size)
    if exclude is not None:
        order = order[~np.isin(order, exclude)]
    n = int(np.searchsorted(np.cumsum(synth.lengths[order]), want_tokens)) + 1
    return np.sort(order[:n])


def main() -> None:
    import faiss
    import torch

    from cascade.kernels.assign import CoarseAssigner, assign_exact, coarse_cells_for
    from cascade.kernels.kmeans import train_centroids
    from cascade.kernels.residual import ResidualCodec, fit_buckets, num_centroids_for

    from synth_pass import SyntheticPass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-index", type=Path, required=True, help="the cached SciFact fp16 token index folder")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=1 << 22, help="k-means sample tokens")
    ap.add_argument("--test", type=int, default=1 << 18, help="fresh tokens timed per setting")
    ap.add_argument("--exact-sub", type=int, default=8192, help="of which assigned exactly for agreement")
    ap.add_argument("--niter", type=int, default=4)
    ap.add_argument("--settings", default="512:1:1,512:2:1,512:2:2,512:2:4,512:3:1,512:4:2,256:2:4,1024:2:4",
                    help="cells:nprobe:rescore, comma separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--centroids-cache", type=Path, help="reuse (or save) the trained centroids here (.npy)")
    ap.add_argument("--out", type=Path, default=HERE / "assign_profile.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    src = np.load(args.tokens_index / "tokens.npy", mmap_mode="r")
    synth = SyntheticPass(src, np.load(args.tokens_index / "offsets.npy"), args.size)
    num_c = num_centroids_for(synth.num_tokens)
    rng = np.random.default_rng(0)
    res: dict = {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "size": args.size,
                 "num_tokens": synth.num_tokens, "num_centroids": num_c, "threads": args.threads}

    sample_docs = docs_for(synth, rng, args.sample)
    if args.centroids_cache and args.centroids_cache.is_file():
        centroids = np.load(args.centroids_cache)
        res["kmeans"] = {"reused": str(args.centroids_cache)}
    else:
        t = clock()
        sample = synth.vectors(sample_docs)[0][:args.sample].astype(np.float16)
        res["sample"] = {"tokens": len(sample), **since(t)}
        t = clock()
        centroids = train_centroids(sample, num_c, niter=args.niter, two_level=True, progress=True)
        res["kmeans"] = {"two_level_cells": coarse_cells_for(num_c), "niter": args.niter, **since(t)}
        if args.centroids_cache:
            np.save(args.centroids_cache, centroids)
    log.info("k-means: %s", res["kmeans"])
    centroids = centroids.astype(np.float16).astype(np.float32)  # the codec's rounded centroids
    x = synth.vectors(docs_for(synth, rng, args.test, exclude=sample_docs))[0][:args.test]
    sub = x[:args.exact_sub]
    t = clock()
    exact = assign_exact(sub, centroids)
    res["exact"] = {"tokens": len(sub), **since(t)}
    res["exact"]["tokens_per_s_wall"] = len(sub) / res["exact"]["wall_s"]
    cut, w = fit_buckets(sub - centroids[exact], 2)
    codec = ResidualCodec(centroids, cut, w, 2, centroids.shape[1])

    def cos(codes):
        return float(np.einsum("ij,ij->i", sub, codec.decompress(*codec.compress(sub, codes=codes))).mean())

    res["exact"]["mean_cos_decoded"] = cos(exact)
    log.info("exact: %s", res["exact"])
    res["coarse"] = []
    for spec in args.settings.split(","):
        cells, nprobe, rescore = map(int, spec.split(":"))
        t = clock()
        assigner = CoarseAssigner.build(centroids, cells, nprobe, rescore)
        built = since(t)
        assigner.assign(x[:4096])  # warm-up
        t = clock()
        codes = assigner.assign(x)
        row = {"cells": cells, "nprobe": nprobe, "rescore": rescore, "build": built, "tokens": len(x), **since(t)}
        row["tokens_per_s_wall"] = len(x) / row["wall_s"]
        row["tokens_per_s_cpu"] = len(x) / row["cpu_s"]
        row["same_as_exact"] = float((codes[:len(sub)] == exact).mean())
        row["mean_cos_decoded"] = cos(codes[:len(sub)])
        sizes = np.diff(assigner.starts)
        row["cell_sizes"] = {"min": int(sizes.min()), "mean": float(sizes.mean()), "max": int(sizes.max())}
        row["hours_for_corpus_wall"] = synth.num_tokens / row["tokens_per_s_wall"] / 3600
        log.info("coarse %s", row)
        res["coarse"].append(row)
        args.out.write_text(json.dumps(res, indent=1))
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
