"""The scale study's SYNTHETIC corpora built by the library's own index build, then measured.

Unlike ``synth.py`` (the study's shortcuts: a restricted assignment among the source token's
SciFact cell, its own two-level codebook and file writer), this feeds synthetic token vectors
(``synth_pass.SyntheticPass``: the same generator, a document's vectors a function of its id) as
an encoder pass to ``cascade.index.residual_index.ResidualIndexArtifact``, exactly as a real corpus
would be: the library samples the codec's training tokens from the pass, trains the k-means (two-level
above 16,384 centroids), assigns every token (coarse-to-fine above 16,384 centroids), compresses,
assembles the files and builds the IVF, with its own progress bars, phase clock and memory bounds.

    . .venv/bin/activate
    CASCADE_CACHE_DIR=/work/cache OMP_WAIT_POLICY=PASSIVE python experiments/scale/library_build.py \\
        --size 1000000 --root /work/scale_indexes            # build, then measure (scale.measure)

The SciFact fp16 token index (``cascade index pipeline=colbert stage.colbert.nbits=null
stage.colbert.search=exhaustive``) is the vectors' source; ``--tokens-index`` names its folder
(default: the one the default ColBERT stage uses). Outputs ``library/library_<size>.json``: build wall
and CPU seconds (process user+sys) per phase, generation ("encoding") time apart, peak RSS (total,
and anonymous memory apart from the memory-mapped source vectors), bytes per token, and the query
table of ``scale.measure``; plus an assignment check (coarse-to-fine vs exact on fresh tokens).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
log = logging.getLogger("scale.library")


class MemoryWatch:
    """Polls /proc/self/status: the peak anonymous and file-backed resident memory (MiB)."""

    def __init__(self, every: float = 0.5):
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.sample()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)

    def stop(self) -> dict:
        self._stop.set()
        self.sample()
        return {f"peak_{k}_mib": round(v, 1) for k, v in self.peak.items()}


def default_tokens_index() -> Path:
    from cascade import load_beir
    from cascade.stages.colbert import ColBERT

    from scale import SCIFACT

    stage = ColBERT(progress=False)
    return stage.artifacts(load_beir(os.environ.get("SCIFACT", SCIFACT)).corpus)[0].path


def artifact(size: int, root: Path, tokens_index: Path, chunk_size: int, assignment: str, seed: int):
    from cascade.index import store
    from cascade.index.residual_index import FORMAT_VERSION, ResidualIndexArtifact

    from synth_pass import SyntheticPass

    src = np.load(tokens_index / "tokens.npy", mmap_mode="r")
    synth = SyntheticPass(src, np.load(tokens_index / "offsets.npy"), size, seed=seed)
    corpus = synth.corpus()
    meta = {"stage": "colbert-synthetic", "synthetic": list(synth.key()), "format_version": FORMAT_VERSION,
            "nbits": 2, "num_centroids": None, "kmeans_niter": 4, "points_per_centroid": 32,
            "assignment": assignment}
    path = store.artifact_dir(root, "colbert_residual", corpus=corpus.fingerprint, **meta)
    return synth, corpus, ResidualIndexArtifact(path, meta, synth.doc_pass(), chunk_size, progress=True, seed=0)


def build(args) -> dict:
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    watch = MemoryWatch()
    wall, cpu, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    synth, corpus, art = artifact(args.size, args.root, args.tokens_index, args.chunk_size, args.assignment, args.seed)
    setup = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    art.build_group([art], corpus)
    total = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    meta = json.loads((art.path / "meta.json").read_text())
    files = {name: f["bytes"] for name, f in meta["files"].items()}
    report = {"num_docs": args.size, "num_tokens": synth.num_tokens, "synthetic": True, "library_build": True,
              "index_dir": str(art.path), "chunk_size": args.chunk_size, "threads": args.threads,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "assignment": args.assignment,
              "assignment_used": meta.get("assignment_used"), "num_centroids": meta["num_centroids"],
              "build_phases": meta["build_phases"], "generation_s_wall": synth.seconds,
              "setup_s": setup, "build_total": total,
              "build_excl_generation_s_wall": total["wall_s"] - synth.seconds - setup["wall_s"],
              "pass_s_wall": meta.get("encode_seconds"), "load_avg_start": list(load0),
              "load_avg_end": list(os.getloadavg()), "index_bytes": sum(files.values()), "files": files,
              "bytes_per_token": sum(files.values()) / synth.num_tokens, "ivf_pairs": meta.get("ivf_pairs"),
              "peak_rss_build_mib": __import__("resource").getrusage(0).ru_maxrss / 1024, **watch.stop()}
    return report


def check(art, corpus, synth, sample: int = 4096, seed: int = 7) -> dict:
    """Coarse-to-fine (as the build assigned) against exact assignment on fresh synthetic tokens."""
    from cascade.kernels.assign import resolve_assignment

    index = art.open(corpus)
    codec = index.codec
    rng = np.random.default_rng(seed)
    x = synth.vectors(np.sort(rng.choice(synth.size, 64, replace=False)))[0]
    x = x[np.sort(rng.choice(len(x), min(sample, len(x)), replace=False))]
    mode = resolve_assignment(art.assignment, codec.num_centroids)
    coarse, exact = codec.with_assignment(mode).assign(x), codec.with_assignment("exact").assign(x)

    def cos(codes):
        c, r = codec.compress(x, codes=codes)
        return float(np.einsum("ij,ij->i", x, codec.decompress(c, r)).mean())

    return {"sample_tokens": len(x), "mode": mode, "same_as_exact": float((coarse == exact).mean()),
            "mean_cos_decoded": cos(coarse), "mean_cos_decoded_exact": cos(exact)}


def measure(args) -> dict:
    import scale

    scale._threads(args.threads)
    synth, corpus, art = artifact(args.size, args.root, args.tokens_index, args.chunk_size, args.assignment, args.seed)
    t = time.perf_counter()
    index = art.open(corpus)  # the library's own open (checksums verified once per file)
    opened = time.perf_counter() - t
    res = scale.measure(art.path, args.queries, args.sub, args.seed, args.threads, index=index)
    res["open_s"] = opened
    res["assignment_check"] = check(art, corpus, synth)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--root", type=Path, default=Path("/work/scale_indexes"))
    ap.add_argument("--tokens-index", type=Path, default=None)
    ap.add_argument("--chunk-size", type=int, default=1024, help="documents per chunk of the pass")
    ap.add_argument("--assignment", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--sub", type=int, default=10, help="queries for the exhaustive reference")
    ap.add_argument("--step", choices=["all", "build", "measure"], default="all")
    ap.add_argument("--out", type=Path, default=HERE / "library", help="where library_<size>.json goes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.tokens_index = args.tokens_index or default_tokens_index()
    args.out.mkdir(parents=True, exist_ok=True)
    part = args.out / f"library_{args.size}.json"
    me = [sys.executable, str(Path(__file__).resolve()), "--size", str(args.size), "--root", str(args.root),
          "--tokens-index", str(args.tokens_index), "--chunk-size", str(args.chunk_size), "--assignment",
          args.assignment, "--threads", str(args.threads), "--seed", str(args.seed), "--queries",
          str(args.queries), "--sub", str(args.sub), "--out", str(args.out)]
    if args.step == "all":  # each step in its own process: the build's peak RSS is the build's alone
        subprocess.run(me + ["--step", "build"], check=True)
        subprocess.run(me + ["--step", "measure"], check=True)
        return
    done = json.loads(part.read_text()) if part.is_file() else {}
    if args.step == "build":
        done = build(args)
        log.info("build: %s", json.dumps(done, indent=1))
    else:
        done.update(measure(args))
    part.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
