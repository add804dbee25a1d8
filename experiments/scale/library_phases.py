"""Per-phase CPU cost of the library's 1M build, per token, on a few chunks of the 1M SYNTHETIC corpus.

The 1M build of ``library_build.py`` was stopped after 63k of 1M documents (an oversubscribed
machine); its partial folder keeps the codec it trained (131,072 centroids, two-level k-means). This
script loads that codec as the library does on resume (``ResidualCodec(...).with_assignment``),
then runs the library's own ``ResidualIndexArtifact.save_chunk`` (assign, compress + norm deltas,
save) on ``--chunks`` chunks of 1,024 synthetic documents taken from the corpus's end, and reports
wall and process CPU seconds per phase and per token, with the load average. Nothing is written
into the partial build (the chunks go to a temporary folder, deleted after).

    OMP_WAIT_POLICY=PASSIVE python experiments/scale/library_phases.py --partial \\
        /work/scale_indexes/colbert_residual/<key>.partial --tokens-index /work/cache/colbert/<key>
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    import faiss
    import torch

    from cascade.index.residual_build import PhaseClock
    from cascade.index.residual_index import CODEC_FILES
    from cascade.kernels.residual import ResidualCodec

    from library_build import artifact

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partial", type=Path, required=True)
    ap.add_argument("--tokens-index", type=Path, required=True)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "library" / "library_1000000_phases.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    synth, corpus, art = artifact(args.size, args.partial.parent.parent, args.tokens_index, args.chunk_size, "auto", 0)
    if art.partial != args.partial:
        raise SystemExit(f"{args.partial} is not the partial build of these settings ({art.partial})")
    clock = PhaseClock()
    centroids, cutoffs, weights = (np.load(args.partial / f"codec.{name}.npy") for name in CODEC_FILES)
    with clock("codec (assigner cells)"):
        codec = ResidualCodec(centroids, cutoffs, weights, 2, centroids.shape[1]).with_assignment(art.assignment)
    art._codec, art._clock = codec, clock
    load0, tokens = list(os.getloadavg()), 0
    tmp = Path(tempfile.mkdtemp(prefix="library_phases."))
    try:
        for i in range(args.chunks):
            s = args.size - (i + 1) * args.chunk_size
            with clock("generate"):
                enc = synth.encode([str(d) for d in range(s, s + args.chunk_size)])
            art.save_chunk(tmp / f"{s:010d}", enc)
            tokens += len(enc.tokens)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    phases = clock.report()
    per_token = {name: {"wall_us": p["wall_s"] / tokens * 1e6, "cpu_us": p["cpu_s"] / tokens * 1e6}
                 for name, p in phases.items() if name != "codec (assigner cells)"}
    res = {"num_centroids": codec.num_centroids, "assignment": "coarse" if codec.assigner is not None else "exact",
           "tokens": tokens, "chunks": args.chunks, "chunk_size": args.chunk_size, "threads": args.threads,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "phases": phases, "per_token": per_token,
           "load_avg": [load0, list(os.getloadavg())], "when": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
