"""Deterministic ties: equal scores come out in document-index order at every cutoff.

Top-k selection (Candidates.topk, top_k_indices) against a sorted reference with ties, padding,
k > N and k = 0; BM25 retrieval (both backends) at every cutoff of a corpus of identical
documents; MaxSim scoring identical documents identically whatever the tiling. topk_dot's
property test is in test_kernels_maxsim.py, fusion's in test_fusion_properties.py, the stages'
twin documents at a cutoff of 1 in test_contract.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cascade import Batch, Candidates, Corpus
from cascade.kernels.dense import top_k_indices, topk_dot
from cascade.kernels.maxsim import maxsim
from cascade.stages.bm25 import BM25

SETTINGS = settings(max_examples=200, deadline=None)


def reference(ids: list[int], scores: list[float], k: int | None) -> list[int]:
    """Sorted by score descending, then document index ascending; the first k."""
    order = sorted(zip(ids, scores), key=lambda p: (-p[1], p[0]))
    return [d for d, _ in order][: len(order) if k is None else k]


@st.composite
def candidate_rows(draw):
    """Packed rows of distinct documents, integer scores from a few levels (ties), some -inf."""
    num_q, width = draw(st.integers(0, 5)), draw(st.integers(0, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 4))
    ids, scores = [], []
    for _ in range(num_q):
        n = int(rng.integers(0, width + 1))
        ids.append(rng.permutation(30)[:n].tolist())
        sc = rng.integers(0, levels, n).astype(float)
        sc[rng.random(n) < 0.1] = -np.inf  # a real document may score -inf (MaxSim: no tokens)
        scores.append(sc.tolist())
    return ids, scores


@SETTINGS
@given(rows=candidate_rows(), k=st.one_of(st.none(), st.integers(0, 14)))
def test_candidates_topk_matches_sorted_reference(rows, k):
    ids, scores = rows
    top = Candidates.from_lists(ids, scores).topk(k)
    want = [reference(i, s, k) for i, s in zip(ids, scores)]
    width = max((len(w) for w in want), default=0)
    assert top.doc_idx.shape == (len(ids), width)
    for q, w in enumerate(want):
        assert top.doc_idx[q].tolist() == w + [-1] * (width - len(w))
        by_doc = dict(zip(ids[q], scores[q]))
        assert top.scores[q, : len(w)].tolist() == [by_doc[d] for d in w]
        assert np.isneginf(top.scores[q, len(w):]).all()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), k=st.integers(-2, 45), levels=st.integers(1, 5))
def test_top_k_indices_matches_sorted_reference(seed, n, k, levels):
    scores = np.random.default_rng(seed).integers(0, levels, n).astype(np.float32)
    got = top_k_indices(scores, k)
    assert got.dtype == np.int64
    assert got.tolist() == reference(list(range(n)), scores.tolist(), max(k, 0))


def test_top_k_indices_tie_at_the_boundary():
    """The issue's smallest case: [0,0,2,1,1,1,2,1] top 3 is [2, 6, 3], not any other 1."""
    assert top_k_indices(np.array([0, 0, 2, 1, 1, 1, 2, 1], np.float32), 3).tolist() == [2, 6, 3]


def _tied_corpus() -> Corpus:
    """60 documents; most are copies of a few texts, so BM25 ties are everywhere, at every cutoff."""
    rng = np.random.default_rng(3)
    texts = ["cat", "cat cat dog", "dog", "cat dog", "bird", "cat fish fish"]
    picked = [texts[i] for i in rng.integers(0, len(texts), 60)]
    return Corpus([f"d{i}" for i in range(60)], picked)


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_bm25_retrieval_ties_at_every_cutoff(backend, tmp_path):
    corpus = _tied_corpus()
    queries = ["cat", "dog cat", "fish"]
    everything = Candidates(np.tile(np.arange(len(corpus)), (len(queries), 1)),
                            np.zeros((len(queries), len(corpus)), np.float32))
    scorer = BM25(k=None, backend=backend, cache_dir=tmp_path)
    scorer.prepare(corpus)
    full = scorer.score(Batch(queries, corpus, everything))
    # a retriever returns the documents sharing a term with the query
    matching = [[d for d in range(len(corpus)) if set(text.split()) & set(corpus.texts[d].split())]
                for text in queries]
    boundary_ties = 0
    for k in range(1, len(corpus) + 2):
        got = BM25(k=k, backend=backend, cache_dir=tmp_path).rerank(Batch(queries, corpus)).candidates
        for q in range(len(queries)):
            want = reference(matching[q], full[q, matching[q]].tolist(), k)
            assert got.doc_idx[q][got.mask[q]].tolist() == want, (k, q)
            ranked = reference(matching[q], full[q, matching[q]].tolist(), None)
            boundary_ties += int(k < len(ranked) and full[q, ranked[k - 1]] == full[q, ranked[k]])
    assert boundary_ties > 50  # the data does put ties at the cutoff


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tile_rows=st.integers(1, 9), block_rows=st.integers(1, 30),
       dtype=st.sampled_from(["float32", "bfloat16"]))
@example(seed=65533, tile_rows=2, block_rows=3, dtype="float32")  # a one-row tile (CI, 2026-12-03)
def test_maxsim_scores_identical_documents_identically(seed, tile_rows, block_rows, dtype):
    """Copies of a document, split differently across tiles and blocks, score bit for bit equally."""
    rng = np.random.default_rng(seed)
    dim = 4
    docs = [rng.standard_normal((int(rng.integers(1, 7)), dim)).astype(np.float16) for _ in range(3)]
    layout = rng.integers(0, 3, 12)  # which original each corpus document copies
    tokens = np.concatenate([docs[i] for i in layout])
    offsets = np.r_[0, np.cumsum([len(docs[i]) for i in layout])]
    queries = rng.standard_normal((2, 3, dim)).astype(np.float32)
    doc_idx = np.tile(np.arange(12), (2, 1))
    got = maxsim(queries, np.ones((2, 3), bool), tokens, offsets, doc_idx, block_rows=block_rows,
                 tile_elements=tile_rows * dim, compute_dtype=dtype)
    for original in range(3):
        copies = got[:, layout == original]
        assert (copies == copies[:, :1]).all()


@SETTINGS
@given(scores=st.lists(st.floats(width=32, allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-30, -1e-30]),
                       min_size=0, max_size=30), k=st.integers(1, 35), chunk=st.integers(1, 12))
def test_topk_dot_orders_any_float32_scores_like_the_reference(scores, k, chunk):
    """Any float32 score (tiny, huge, +-inf, -0.0 equal to 0.0) is ranked by value, ties by index.

    One-dimensional vectors with a query of 1.0 make the dot products the scores themselves.
    """
    docs = np.array(scores, np.float32).reshape(-1, 1)
    idx, sc = topk_dot(np.ones((1, 1), np.float32), docs, k, chunk_size=chunk)
    want = reference(list(range(len(scores))), [float(np.float32(s)) for s in scores], k)
    assert idx[0].tolist() == want


@pytest.mark.parametrize("k", [1, 2, 10, 257, 4096, 4999])
def test_top_k_indices_on_large_arrays(k):
    """Large inputs (numpy's introselect, not the small-array selection sort) with ties at the cutoff."""
    scores = np.random.default_rng(k).integers(0, 500, 5000).astype(np.float32)
    expected = np.lexsort((np.arange(5000), -scores))[:k]
    np.testing.assert_array_equal(top_k_indices(scores, k), expected)


def test_topk_dot_scores_a_query_alike_alone_and_in_a_batch():
    """One query's BLAS pass is the matrix-vector one, which rounds differently: it must not show."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, 384)).astype(np.float32)
    queries = rng.standard_normal((9, 384)).astype(np.float32)
    idx, scores = topk_dot(queries, docs, 20, chunk_size=1000, query_block=4)  # a last block of one query
    for q in range(len(queries)):
        one_idx, one_scores = topk_dot(queries[q:q + 1], docs, 20, chunk_size=1000)
        assert np.array_equal(one_idx[0], idx[q]) and np.array_equal(one_scores[0], scores[q])
