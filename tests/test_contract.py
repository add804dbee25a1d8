"""The contract every stage passes: sorted rows, at most k, reranker output within its input, query order kept.

Each entry of STAGE_FACTORIES builds a stage for the tiny dataset; add new stages here.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cascade import Batch, Candidates, NeedsCandidatesError, testing
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.stages.cross_encoder import CrossEncoder

_TINY: dict[str, str] = {}


def _tiny(kind: str) -> str:
    """A tiny random checkpoint (cascade.testing.tiny_<kind>), built once per session."""
    if kind not in _TINY:
        if not _TINY:
            root = Path(tempfile.mkdtemp(prefix="cascade-tiny-models-"))
            atexit.register(shutil.rmtree, root, True)
            _TINY["_root"] = str(root)
        _TINY[kind] = str(getattr(testing, f"tiny_{kind}")(Path(_TINY["_root"]) / kind))
    return _TINY[kind]


STAGE_FACTORIES = {
    "bm25s": lambda: BM25(k=3),
    "rank_bm25-okapi": lambda: BM25(k=3, backend="rank_bm25"),
    "rank_bm25-bm25plus": lambda: BM25(k=3, backend="rank_bm25", variant="bm25plus"),
    "bm25-fused": lambda: BM25(k=3, fusion="zscore"),
    "biencoder": lambda: BiEncoder(k=3, model=_tiny("sentence_transformer"), progress=False),
    "biencoder-fused": lambda: BiEncoder(k=3, model=_tiny("sentence_transformer"), progress=False, fusion="zscore"),
    "colbert-plain": lambda: ColBERT(k=3, model=_tiny("sentence_transformer"), progress=False),
    "colbert-colbert_ai": lambda: ColBERT(k=3, model=_tiny("colbert_ai"), progress=False),
    "colbert-pylate-fused": lambda: ColBERT(k=3, model=_tiny("pylate"), progress=False, fusion="minmax"),
    "cross_encoder": lambda: CrossEncoder(k=3, model=_tiny("cross_encoder")),
}


def _input_candidates(num_queries: int, num_docs: int) -> Candidates:
    rng = np.random.default_rng(0)
    rows = [rng.choice(num_docs, size=rng.integers(1, num_docs), replace=False) for _ in range(num_queries)]
    rows[-1] = rows[-1][:1]  # a short row, so the batch has padding
    return Candidates.from_lists([list(r) for r in rows], [list(rng.normal(size=len(r))) for r in rows])


def _check_output(out: Candidates, num_queries: int, k: int) -> None:
    assert out.num_queries == num_queries
    assert (out.lengths <= k).all()
    for idx, scores, mask in zip(out.doc_idx, out.scores, out.mask):
        assert mask[: mask.sum()].all(), "padding must follow the valid entries"
        assert np.isfinite(scores[mask]).all()
        assert (np.diff(scores[mask]) <= 0).all(), "rows must be sorted by descending score"
        assert len(set(idx[mask])) == mask.sum(), "a document appears twice in one row"


@pytest.fixture(params=sorted(STAGE_FACTORIES))
def stage(request):
    return STAGE_FACTORIES[request.param]()


def test_rerank_contract(stage, tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    cands = _input_candidates(len(queries), len(corpus))
    out = stage.rerank(Batch(queries, corpus, cands)).candidates
    _check_output(out, len(queries), stage.k)
    for q in range(len(queries)):
        assert set(out.doc_idx[q][out.mask[q]]) <= set(cands.doc_idx[q][cands.mask[q]])


def test_retrieve_contract(stage, tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    try:
        out = stage.rerank(Batch(queries, corpus)).candidates
    except NeedsCandidatesError as err:
        assert "retriever" in str(err)
        return
    _check_output(out, len(queries), stage.k)
    # query order kept: each query alone gives the same row as in the batch
    for q in range(len(queries)):
        alone = stage.rerank(Batch(queries[q:q + 1], corpus)).candidates
        assert list(alone.doc_idx[0][alone.mask[0]]) == list(out.doc_idx[q][out.mask[q]])


def test_empty_query_gives_empty_row(stage, tiny_dataset):
    corpus = tiny_dataset.corpus
    try:
        out = stage.rerank(Batch(["", "cat"], corpus)).candidates
    except NeedsCandidatesError:
        return
    assert out.lengths[0] == 0


def test_candidates_outside_corpus_rejected(stage, tiny_dataset):
    bad = Candidates(np.array([[0, len(tiny_dataset.corpus) + 5]]), np.array([[1.0, 0.5]]))
    with pytest.raises(Exception, match="outside the corpus"):
        stage.rerank(Batch(["cat"], tiny_dataset.corpus, bad))
