#!/usr/bin/env python3
"""Turn GCIDE (the GNU Collaborative International Dictionary of English) into a BEIR folder.

    apt-get install dict-gcide          # Debian's package: /usr/share/dictd/gcide.{index,dict.dz}
    python experiments/scale_real/make_corpus.py OUT_DIR [--queries 300] [--seed 0]

One document per dictionary entry (the dictd index's distinct (offset, length) records, in the
index's order): title = the headword, text = the entry's body with whitespace collapsed. The entry's
first line (the headword line) is dropped from the text. Queries are REAL TEXT OF THE CORPUS,
stated as such: for ``--queries`` entries drawn at random (seeded), the first sentence of the
entry's body (at least 6 words) is the query and that entry is its one judged document. They are
known-item queries: they measure whether the index finds the text it was given, not relevance.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

DICT = Path("/usr/share/dictd")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 64 + B64.index(ch)
    return value


def entries(index: Path, data: Path) -> list[tuple[str, str]]:
    """(headword, body) of every distinct entry, in the index's (headword) order."""
    raw = gzip.open(data).read()
    seen, out = set(), []
    for line in index.read_text(encoding="utf-8").splitlines():
        head, off, size = line.split("\t")
        if head.startswith("00-"):  # the database's own description entries
            continue
        key = (b64(off), b64(size))
        if key in seen:
            continue
        seen.add(key)
        body = raw[key[0]:key[0] + key[1]].decode("utf-8", errors="replace").split("\n", 1)
        text = " ".join((body[1] if len(body) > 1 else "").split())
        if text:
            out.append((head, text))
    return out


def first_sentence(text: str) -> str | None:
    """The entry's first sentence of plain prose: 6 to 40 words, mostly alphabetic, no markup."""
    for sentence in re.split(r"(?<=[.;])\s+", text):
        if any(ch in sentence for ch in "\\[]{}=|"):
            continue  # pronunciations, etymologies, sources
        words = sentence.split()
        plain = sum(w.strip(".,;:'\"!?()-").isalpha() for w in words)
        if 6 <= len(words) <= 40 and plain >= 0.8 * len(words):
            return sentence
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    docs = entries(DICT / "gcide.index", DICT / "gcide.dict.dz")
    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    with (args.out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for i, (head, text) in enumerate(docs):
            handle.write(json.dumps({"_id": f"g{i}", "title": head, "text": text}) + "\n")
    rng, queries = random.Random(args.seed), []
    for i in rng.sample(range(len(docs)), len(docs)):
        sentence = first_sentence(docs[i][1])
        if sentence:
            queries.append((f"q{len(queries)}", sentence, f"g{i}"))
        if len(queries) == args.queries:
            break
    with (args.out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid, text, _ in queries:
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (args.out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, d in queries), encoding="utf-8")
    print(f"{len(docs)} documents, {len(queries)} queries in {args.out}")


if __name__ == "__main__":
    main()
