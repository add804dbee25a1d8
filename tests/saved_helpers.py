"""Shared pieces of the saved-index tests: a small random corpus, pipelines over a tiny model, snapshots."""
from __future__ import annotations

import numpy as np

WORDS = ("cat dog fish bird tree river mountain city car road house garden music paper water fire stone "
         "light night rain snow wind sun moon star field forest lake sea ship train bread milk apple").split()
QUERIES = ["cat river", "mountain snow wind", "bread and milk", "ship on the sea", "music at night",
           "forest lake", "fire stone light", "apple tree garden"]


def make_docs(n: int, seed: int = 0, start: int = 0) -> dict[str, str]:
    """``n`` documents ``d<start>``... of 4 to 30 random words (one of only stopwords, so BM25 has an empty one)."""
    rng = np.random.default_rng(seed)
    docs = {f"d{start + i}": " ".join(rng.choice(WORDS, int(rng.integers(4, 31)))) for i in range(n)}
    if start == 0 and n > 3:
        docs["d3"] = "the and of a"
    return docs


def pipelines(model: str) -> dict:
    """One pipeline per stored stage kind (BM25, bi-encoder, ColBERT fp16, ColBERT 2-bit PLAID), and a cascade."""
    from cascade.stages.biencoder import BiEncoder
    from cascade.stages.bm25 import BM25
    from cascade.stages.colbert import ColBERT

    return {"bm25": BM25() % 15, "dense": BiEncoder(model=model, progress=False) % 10,
            "colbert": ColBERT(model=model, progress=False) % 10,
            "colbert2": ColBERT(model=model, nbits=2, num_centroids=16, progress=False) % 10,
            "cascade": BM25() % 30 >> BiEncoder(model=model, progress=False) % 15
            >> ColBERT(model=model, progress=False) % 5}


def snapshot(index, k: int = 10, **filters) -> list[tuple[list[str], list[float]]]:
    """Every query's ranking (ids and scores) from ``index``."""
    return [(r.doc_ids, r.scores) for r in index.search(QUERIES, k=k, **filters)]


def assert_same(got, want, exact: bool = False) -> None:
    """Identical rankings; scores equal (``exact``) or within rounding: a text encoded in another batch of
    documents can come out one float16 step apart in the ColBERT token index (~1e-4 on a MaxSim sum)."""
    assert [ids for ids, _ in got] == [ids for ids, _ in want]
    for (_, a), (_, b) in zip(got, want):
        if exact:
            assert a == b
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-4)


def state(index) -> dict:
    """What a reader sees of an index: generation, live ids, texts, metadata, rankings."""
    ids = sorted(index.corpus.index_of)
    return {"generation": index.generation, "ids": ids, "docs": [index.doc(i) for i in ids],
            "rankings": snapshot(index)}
