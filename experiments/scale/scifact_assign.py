"""SciFact (real): coarse-to-fine against exact centroid assignment, and the 2-bit index's bytes all told.

For the 2-bit index of ``ColBERT(nbits=2)`` with ``assignment=auto`` (exact at SciFact's 16,384
centroids: the default, the index ``cascade run stage.colbert.nbits=2`` uses) and with ``assignment=coarse``
(two-level k-means, coarse-to-fine assignment):

* agreement: on the exact index's own codec, the coarse-to-fine assignment (the library's defaults)
  of every SciFact token against the stored exact codes, and the mean cosine of decoded (2-bit)
  vectors to the fp16 token vectors under either assignment;
* bytes per token all told: every file of every artifact the 2-bit index needs (the index folder
  and the k-means cache ``colbert_centroids``, meta.json files included), and the index alone.

Both indexes are built from the cached fp16 token index when missing (``cascade run`` builds them too).

    CASCADE_CACHE_DIR=/work/cache OMP_WAIT_POLICY=PASSIVE python experiments/scale/scifact_assign.py
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SCIFACT = str(HERE.parents[2] / "shared" / "data" / "scifact")


def folder_bytes(path: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()  # no options: SciFact from $SCIFACT or the shared data folder, caches under $CASCADE_CACHE_DIR

    from cascade import load_beir
    from cascade.stages.colbert import ColBERT

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    corpus = load_beir(os.environ.get("SCIFACT", SCIFACT)).corpus
    res: dict = {"load_avg_start": list(os.getloadavg())}
    stages = {}
    for mode, setting in (("exact", "auto"), ("coarse", "coarse")):  # auto: exact at SciFact's 16,384 centroids
        stage = ColBERT(nbits=2, assignment=setting, progress=False)
        stage.prepare(corpus)
        stages[mode] = stage
        art = stage.artifacts(corpus)[0]
        index = stage._index
        tokens = len(index.codes)
        index_files = folder_bytes(art.path)
        kmeans_dir = art.centroids_dir(corpus, index.codec.num_centroids)
        kmeans_files = folder_bytes(kmeans_dir)
        res[mode] = {"setting": setting, "num_tokens": tokens, "num_centroids": index.codec.num_centroids,
                     "assignment_used": index.meta.get("assignment_used"),
                     "build_phases": index.meta.get("build_phases"),
                     "index_files": index_files, "kmeans_files": kmeans_files,
                     "index_bytes_per_token": sum(index_files.values()) / tokens,
                     "bytes_per_token_all_told": (sum(index_files.values()) + sum(kmeans_files.values())) / tokens,
                     "centroid_dtypes": {"index": str(np.load(art.path / "centroids.npy", mmap_mode="r").dtype),
                                         "kmeans": str(np.load(kmeans_dir / "centroids.npy", mmap_mode="r").dtype)}}
    # agreement on the exact index's codec, every token
    exact = stages["exact"]._index
    source = stages["exact"].artifacts(corpus)[0].token_source.open(corpus)
    x = np.asarray(source.tokens, np.float32)
    codec = exact.codec
    t, c = time.perf_counter(), time.process_time()
    coarse_codes = codec.with_assignment("coarse").assign(x)
    coarse_s = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    t, c = time.perf_counter(), time.process_time()
    exact_codes = codec.with_assignment("exact").assign(x)
    exact_s = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    stored = np.asarray(exact.codes, np.int64)

    def cos(codes):
        out, step = [], 1 << 18
        for s in range(0, len(x), step):
            c_, r_ = codec.compress(x[s:s + step], codes=codes[s:s + step])
            out.append(np.einsum("ij,ij->i", x[s:s + step], codec.decompress(c_, r_)))
        return float(np.concatenate(out).mean())

    res["agreement"] = {"tokens": len(x), "stored_codes_equal_exact_now": float((exact_codes == stored).mean()),
                        "same_as_exact": float((coarse_codes == exact_codes).mean()),
                        "mean_cos_decoded_exact": cos(exact_codes), "mean_cos_decoded_coarse": cos(coarse_codes),
                        "coarse_assign": coarse_s, "exact_assign": exact_s}
    res["load_avg_end"] = list(os.getloadavg())
    out = HERE / "scifact_assign.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k in ("agreement",)}, indent=1))
    for mode in ("exact", "coarse"):
        print(mode, {k: res[mode][k] for k in ("index_bytes_per_token", "bytes_per_token_all_told", "centroid_dtypes")})


if __name__ == "__main__":
    main()
