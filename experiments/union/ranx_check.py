"""ranx RRF fusion of the BM25 and dense runs of dump_runs.py against cascade union of them (same inputs).

Runs in a separate environment with ranx (not a cascade dependency): python -m venv /tmp/ranxenv;
/tmp/ranxenv/bin/pip install ranx; /tmp/ranxenv/bin/python experiments/union/ranx_check.py OUT_DIR
"""
import sys

from ranx import Qrels, Run, evaluate, fuse

d = sys.argv[1].rstrip("/") + "/"
qrels = Qrels.from_file(d + "qrels.txt", kind="trec")
bm25, dense = Run.from_file(d + "bm25.trec", kind="trec"), Run.from_file(d + "dense.trec", kind="trec")
mine = Run.from_file(d + "union.trec", kind="trec")
for depth in (1000, 100):
    if depth == 100:
        bm25 = Run({q: dict(sorted(r.items(), key=lambda x: -x[1])[:100]) for q, r in bm25.to_dict().items()})
        dense = Run({q: dict(sorted(r.items(), key=lambda x: -x[1])[:100]) for q, r in dense.to_dict().items()})
        mine = Run.from_file(d + "union100.trec", kind="trec")
    fused = fuse([bm25, dense], method="rrf", params={"k": 60})
    print(f"top {depth} of each:", "ranx", evaluate(qrels, fused, ["ndcg@10", "recall@100"]),
          "cascade", evaluate(qrels, mine, ["ndcg@10", "recall@100"]))
    a, b = fused.to_dict(), mine.to_dict()
    same_docs = all(set(a[q]) == set(b.get(q, {})) for q in a)
    diff = max(abs(a[q][x] - b[q][x]) for q in a for x in a[q] if x in b.get(q, {}))
    order = sum(sorted(a[q], key=lambda x: (-a[q][x], x))[:100] == sorted(b[q], key=lambda x: (-b[q][x], x))[:100]
                for q in a)
    print("  same union per query:", same_docs, "max |score diff|:", diff, "queries with identical top 100 order:",
          order, "/", len(a))

# where do the fused scores differ? only in queries where a side has tied scores?
bm25 = Run.from_file(d + "bm25.trec", kind="trec").to_dict()
dense = Run.from_file(d + "dense.trec", kind="trec").to_dict()
fused = fuse([Run(bm25), Run(dense)], method="rrf", params={"k": 60}).to_dict()
mine = Run.from_file(d + "union.trec", kind="trec").to_dict()
differ = [q for q in fused if max(abs(fused[q][x] - mine[q][x]) for x in fused[q]) > 1e-6]
tied = lambda r: len(set(r.values())) < len(r)
print("queries whose fused scores differ:", len(differ), "of which a side has ties:",
      sum(tied(bm25[q]) or tied(dense.get(q, {})) for q in differ))
