"""Usage: CASCADE_CACHE_DIR=/work/cache python experiments/union/dump_runs.py OUT_DIR [path/to/scifact]

Write BM25 % 1000, BiEncoder % 1000 and cascade's RRF union of them as TREC runs, plus qrels."""
import sys

from cascade import load_beir, write_trec_run
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25

out = sys.argv[1].rstrip("/") + "/"
ds = load_beir(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/scifact")
bm25, dense = BM25() % 1000, BiEncoder(progress=False) % 1000
for name, pipe in [("bm25", bm25), ("dense", dense), ("union", bm25 + dense), ("union100", bm25 % 100 + dense % 100)]:
    write_trec_run(pipe(ds), out + name + ".trec")
with open(out + "qrels.txt", "w") as f:
    for q, rels in ds.qrels.items():
        for d, r in rels.items():
            f.write(f"{q} 0 {d} {r}\n")
