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

from cascade import Batch, Candidates, NeedsCandidatesError, UnionFusion, apply, testing
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
    "colbert-compressed": lambda: ColBERT(k=3, model=_tiny("sentence_transformer"), progress=False, nbits=2,
                                          num_centroids=8),
    "colbert-compressed-exhaustive": lambda: ColBERT(k=3, model=_tiny("sentence_transformer"), progress=False,
                                                     nbits=4, num_centroids=8, search="exhaustive"),
    "colbert-pruned": lambda: ColBERT(k=3, model=_tiny("sentence_transformer"), progress=False, nbits=2,
                                      num_centroids=8, prune_to=4),
    "cross_encoder": lambda: CrossEncoder(k=3, model=_tiny("cross_encoder")),
    "union-rrf": lambda: (BM25(k=3) + BM25(k=3, backend="rank_bm25")) % 3,
    "union-zscore": lambda: UnionFusion([BM25(k=3), BiEncoder(k=3, model=_tiny("sentence_transformer"),
                                                              progress=False)], method="zscore", k=3),
    "apply-per-query": lambda: apply(lambda q, ids, texts, scores: [len(t) for t in texts], per_query=True, k=3),
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


def _check_ties(out: Candidates) -> None:
    """Equal scores come out in document-index order."""
    for idx, sc, m in zip(out.doc_idx, out.scores, out.mask):
        idx, sc = idx[m], sc[m]
        same = sc[1:] == sc[:-1]
        assert (idx[1:][same] > idx[:-1][same]).all(), f"tied scores out of document order: {idx}, {sc}"


@pytest.fixture(params=sorted(STAGE_FACTORIES))
def stage(request):
    return STAGE_FACTORIES[request.param]()


@pytest.fixture
def twin_dataset(tiny_dataset):
    """The tiny dataset with exact copies of two documents appended: every stage must tie them."""
    from cascade import Corpus, Dataset

    corpus = tiny_dataset.corpus
    ids = list(corpus.ids) + ["twin-of-d1", "twin-of-d3"]
    texts = list(corpus.texts) + [corpus.texts[0], corpus.texts[2]]
    return Dataset(Corpus(ids, texts), tiny_dataset.query_ids, tiny_dataset.query_texts, tiny_dataset.qrels, "twins")


def test_rerank_contract(stage, tiny_dataset):
    """Called for real: sorted rows, at most k, only its own candidates, query order kept, ties in doc order."""
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    cands = _input_candidates(len(queries), len(corpus))
    out = stage.rerank(Batch(queries, corpus, cands)).candidates
    _check_output(out, len(queries), stage.k)
    _check_ties(out)
    assert (out.lengths == np.minimum(cands.lengths, stage.k)).all(), "a reranker keeps min(k, given) per query"
    for q in range(len(queries)):
        assert set(out.doc_idx[q][out.mask[q]]) <= set(cands.doc_idx[q][cands.mask[q]])
        alone = stage.rerank(Batch(queries[q:q + 1], corpus, Candidates(cands.doc_idx[q:q + 1],
                                                                        cands.scores[q:q + 1]))).candidates
        assert list(alone.doc_idx[0][alone.mask[0]]) == list(out.doc_idx[q][out.mask[q]]), "query order"


def test_ties_at_the_cutoff_keep_the_lower_document(stage, twin_dataset):
    """Twins (identical texts) at a cutoff of 1: with equal scores the lower document index wins.

    Most stages score twins bit for bit equally; a model may not (the cross-encoder's logits
    differ in the last bits between batch positions), and then the higher score must win.
    """
    corpus, n = twin_dataset.corpus, len(twin_dataset.corpus)
    one = stage % 1
    ties = 0
    for text in twin_dataset.query_texts:
        for first, twin in [(0, n - 2), (2, n - 1)]:
            batch = Batch([text], corpus, Candidates(np.array([[twin, first]]), np.zeros((1, 2), np.float32)))
            out = one.rerank(batch).candidates.doc_idx[0].tolist()
            if one.fusion is None:
                s_twin, s_first = one.score(batch)[0]
                ties += int(s_twin == s_first)
                expected = first if s_first >= s_twin else twin
            else:
                expected = first  # fusion of equal incoming scores with equal own scores
            assert out == [expected], (text, out)
    if one.fusion is None and type(stage).__name__ != "CrossEncoder":
        assert ties == 2 * len(twin_dataset.query_texts), "identical texts should score equally"


def test_retrieve_contract(stage, tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    if not stage.can_retrieve():
        with pytest.raises(NeedsCandidatesError, match="retriever"):
            stage.rerank(Batch(queries, corpus))
        return
    out = stage.rerank(Batch(queries, corpus)).candidates
    _check_output(out, len(queries), stage.k)
    _check_ties(out)
    assert (out.lengths > 0).all(), "every query of the tiny dataset shares a word with some document"
    for q in range(len(queries)):  # query order kept: each query alone gives the same row as in the batch
        alone = stage.rerank(Batch(queries[q:q + 1], corpus)).candidates
        assert list(alone.doc_idx[0][alone.mask[0]]) == list(out.doc_idx[q][out.mask[q]])


def test_retrieval_cutoffs_keep_the_lower_document_of_a_tie(stage, twin_dataset):
    """An exact retriever's top k is the first k of its full ranking at every k, so ties across
    any cutoff keep the lower document (each twin ties with its original); PLAID is approximate
    and only has to order its ties."""
    if not stage.can_retrieve():
        pytest.skip("not a retriever (test_retrieve_contract checks the refusal)")
    corpus, queries = twin_dataset.corpus, twin_dataset.query_texts
    full = (stage % None).rerank(Batch(queries, corpus)).candidates
    _check_ties(full)
    if getattr(stage, "search_mode", None) == "plaid":
        return
    for k in (1, 2, 3, 5):
        cut = (stage % k).rerank(Batch(queries, corpus)).candidates
        for q in range(len(queries)):
            assert cut.doc_idx[q][cut.mask[q]].tolist() == full.doc_idx[q][full.mask[q]][:k].tolist(), (k, q)


def test_empty_query(stage, tiny_dataset):
    """A retriever finds nothing for an empty query; a reranker still returns its (at most k) candidates."""
    corpus = tiny_dataset.corpus
    if stage.can_retrieve():
        out = stage.rerank(Batch(["", "cat"], corpus)).candidates
        assert out.lengths[0] == 0 and out.lengths[1] > 0
    cands = Candidates(np.array([[0, 1, 2, 3], [0, 1, 2, 3]]), np.zeros((2, 4), np.float32))
    out = stage.rerank(Batch(["", "cat"], corpus, cands)).candidates
    _check_output(out, 2, stage.k)
    assert (out.lengths == min(4, stage.k)).all()


def test_candidates_outside_corpus_rejected(tiny_dataset):
    """A Batch refuses candidates outside its corpus, before any stage sees them."""
    bad = Candidates(np.array([[0, len(tiny_dataset.corpus) + 5]]), np.array([[1.0, 0.5]]))
    with pytest.raises(Exception, match="outside the corpus"):
        Batch(["cat"], tiny_dataset.corpus, bad)
