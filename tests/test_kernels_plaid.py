"""Tests for plaid.py: IVF, centroid interaction, PLAID search vs exhaustive MaxSim."""
import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascade.kernels import interaction_fused
from cascade.kernels.maxsim import maxsim, maxsim_naive
from cascade.kernels.plaid import (
    approx_scores,
    build_ivf,
    centroid_scores,
    default_search_params,
    exhaustive_search,
    plaid_candidates,
    plaid_search,
    prune_candidates,
    residual_exact_fn,
)
from cascade.kernels.residual import num_centroids_for, train_codec

log = logging.getLogger(__name__)


def naive_ivf(codes, offsets, num_centroids):
    lists = [set() for _ in range(num_centroids)]
    for d in range(len(offsets) - 1):
        for c in codes[offsets[d]:offsets[d + 1]]:
            lists[c].add(d)
    return [sorted(s) for s in lists]


def naive_approx(scores, codes, offsets, docs, keep=None):
    out = []
    for d in docs:
        c = codes[offsets[d]:offsets[d + 1]]
        if keep is not None:
            c = c[keep[c]]
        out.append(scores[:, c].max(axis=1).sum() if len(c) else -np.inf)
    return np.array(out, np.float32)


def naive_topk(scores, k):
    """Rows of (doc, score) sorted by score descending then doc ascending, -1/-inf padded."""
    idx = np.full((len(scores), k), -1, np.int64)
    sc = np.full((len(scores), k), -np.inf, np.float32)
    for q, row in enumerate(scores):
        ranked = sorted((-s, d) for d, s in enumerate(row) if s > -np.inf)[:k]
        idx[q, :len(ranked)] = [d for _, d in ranked]
        sc[q, :len(ranked)] = [-s for s, _ in ranked]
    return idx, sc


@st.composite
def corpora(draw):
    num_docs = draw(st.integers(0, 30))
    lengths = draw(st.lists(st.integers(0, 12), min_size=num_docs, max_size=num_docs))
    num_c = draw(st.integers(1, 20))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes = np.array(draw(st.lists(st.integers(0, num_c - 1), min_size=int(offsets[-1]),
                                   max_size=int(offsets[-1]))), np.int32)
    return codes, offsets, num_c


@given(corpora(), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_build_ivf_matches_naive(corpus, chunk_tokens):
    codes, offsets, num_c = corpus
    ivf_docs, ivf_offsets = build_ivf(codes, offsets, num_c, chunk_tokens=chunk_tokens)
    assert ivf_docs.dtype == np.int32 and ivf_offsets.dtype == np.int64 and ivf_offsets.shape == (num_c + 1,)
    expected = naive_ivf(codes, offsets, num_c)
    assert [ivf_docs[ivf_offsets[c]:ivf_offsets[c + 1]].tolist() for c in range(num_c)] == expected


@given(corpora(), st.integers(1, 5), st.integers(0, 2 ** 32 - 1), st.sampled_from([None, 0.0, 0.3, 0.8]),
       st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_approx_scores_match_naive(corpus, lq, seed, keep_frac, tile):
    codes, offsets, num_c = corpus
    rng = np.random.default_rng(seed)
    num_docs = len(offsets) - 1
    docs = np.unique(rng.integers(0, max(num_docs, 1), rng.integers(0, num_docs + 1))) if num_docs else np.zeros(0, int)
    scores = rng.standard_normal((lq, num_c)).astype(np.float32)
    keep = None if keep_frac is None else rng.random(num_c) < keep_frac
    expected = naive_approx(scores, codes, offsets, docs, keep)
    np.testing.assert_allclose(approx_scores(scores, codes, offsets, docs, keep=keep, tile_elements=tile,
                                             kernel="numpy"), expected, rtol=1e-5, atol=1e-5)
    if interaction_fused.available():  # the numba pass: the same maxima, so the same sums bit for bit
        np.testing.assert_array_equal(approx_scores(scores, codes, offsets, docs, keep=keep, kernel="fused"),
                                      approx_scores(scores, codes, offsets, docs, keep=keep, kernel="numpy"))
    ivf = build_ivf(codes, offsets, num_c)  # pairs from the kept centroids' lists when cheaper
    via_ivf = approx_scores(scores, codes, offsets, docs, keep=keep, ivf=ivf, tile_elements=tile, kernel="numpy")
    np.testing.assert_allclose(via_ivf, expected, rtol=1e-5, atol=1e-5)
    if interaction_fused.available():
        np.testing.assert_array_equal(approx_scores(scores, codes, offsets, docs, keep=keep, ivf=ivf, kernel="fused"),
                                      via_ivf)


@pytest.mark.skipif(not interaction_fused.available(), reason="numba not installed")
@given(corpora(), st.integers(1, 40), st.integers(0, 2 ** 32 - 1), st.sampled_from([0.0, 0.5, 1.0]))
@settings(max_examples=200, deadline=None)
def test_doc_maxima_matches_its_naive_loop(corpus, lq, seed, pruned):
    codes, offsets, num_c = corpus
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((num_c, lq)).astype(np.float32)
    table[rng.random(num_c) < pruned] = -np.inf  # pruned centroids; a document of only those stays -inf
    docs = np.arange(len(offsets) - 1)
    starts, lengths = offsets[docs], np.diff(offsets)
    got = interaction_fused.doc_maxima(table, codes, starts, lengths)
    np.testing.assert_array_equal(got, interaction_fused.doc_maxima_naive(table, codes, starts, lengths))
    assert got.shape == (len(docs), lq) and got.dtype == np.float32


@pytest.mark.skipif(not interaction_fused.available(), reason="numba not installed")
@given(corpora(), st.integers(1, 40), st.integers(0, 2 ** 32 - 1), st.floats(0, 1), st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_ivf_maxima_matches_its_naive_loop(corpus, lq, seed, kept_frac, cand_frac):
    codes, offsets, num_c = corpus
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((num_c, lq)).astype(np.float32)
    ivf_docs, ivf_offsets = build_ivf(codes, offsets, num_c)
    kept = np.flatnonzero(rng.random(num_c) < kept_frac)
    docs = np.flatnonzero(rng.random(len(offsets) - 1) < cand_frac)  # the candidates, in slot order
    slot = np.full(len(offsets) - 1, -1, np.int32)
    slot[docs] = np.arange(len(docs))
    got = interaction_fused.ivf_maxima(table, kept, ivf_docs, ivf_offsets, slot, len(docs))
    np.testing.assert_array_equal(got, interaction_fused.ivf_maxima_naive(table, kept, ivf_docs, ivf_offsets,
                                                                          slot, len(docs)))
    assert got.shape == (len(docs), lq) and got.dtype == np.float32


def test_approx_scores_refuses_an_unknown_kernel():
    with pytest.raises(ValueError, match="kernel must be one of"):
        approx_scores(np.zeros((1, 2), np.float32), np.zeros(1, np.int32), np.array([0, 1]), np.array([0]),
                      kernel="cuda")


def test_default_search_params():
    assert default_search_params(10) == dict(ncells=1, centroid_score_threshold=0.5, ndocs=256)
    assert default_search_params(11) == dict(ncells=2, centroid_score_threshold=0.45, ndocs=1024)
    assert default_search_params(100)["ndocs"] == 1024
    assert default_search_params(101) == dict(ncells=4, centroid_score_threshold=0.4, ndocs=4096)
    assert default_search_params(2000)["ndocs"] == 8000


def make_corpus(num_docs, dim, num_topics, seed, min_len=5, max_len=40):
    """Clustered unit token vectors: each doc draws tokens around a few of the topic centres."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_topics, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    lengths = rng.integers(min_len, max_len + 1, num_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    doc_topics = rng.integers(0, num_topics, (num_docs, 6))
    topic = doc_topics[np.repeat(np.arange(num_docs), lengths), rng.integers(0, 6, offsets[-1])]
    x = centers[topic] + 0.5 * rng.standard_normal((offsets[-1], dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), offsets


def make_queries(tokens, offsets, num_q, lq, seed, noise=0.3):
    rng = np.random.default_rng(seed)
    docs = rng.integers(0, len(offsets) - 1, num_q)
    rows = offsets[docs][:, None] + (rng.random((num_q, lq)) * np.diff(offsets)[docs][:, None]).astype(int)
    q = tokens[rows] + noise * rng.standard_normal((num_q, lq, tokens.shape[1])) / np.sqrt(tokens.shape[1])
    q /= np.linalg.norm(q, axis=2, keepdims=True)
    mask = np.ones((num_q, lq), bool)
    mask[:, lq - 3:] = rng.random((num_q, 3)) < 0.5  # some padding
    q[~mask] = 7.0  # garbage at padding must not matter
    return q.astype(np.float32), mask


@pytest.fixture(scope="module")
def index():
    tokens, offsets = make_corpus(300, 32, 40, seed=3)
    codec = train_codec(tokens, num_centroids_for(len(tokens)), 2, seed=0)
    codes, residuals = codec.compress(tokens)
    decompressed = codec.decompress(codes, residuals)
    ivf = build_ivf(codes, offsets, codec.num_centroids)
    queries, mask = make_queries(tokens, offsets, 12, 16, seed=4)
    return dict(codec=codec, codes=codes, residuals=residuals, offsets=offsets, tokens=decompressed,
                ivf=ivf, queries=queries, mask=mask)


def exhaustive_naive(ix, k):
    n = len(ix["offsets"]) - 1
    all_docs = np.broadcast_to(np.arange(n), (len(ix["queries"]), n))
    return naive_topk(maxsim_naive(ix["queries"], ix["mask"], ix["tokens"], ix["offsets"], all_docs), k)


def search(ix, k, exact_fn=None, **params):
    exact_fn = exact_fn or residual_exact_fn(ix["codec"].decompress, ix["codes"], ix["residuals"], ix["offsets"],
                                             maxsim_naive)
    return plaid_search(ix["queries"], ix["mask"], ix["codec"].centroids, ix["codes"], ix["offsets"], *ix["ivf"],
                        k=k, exact_fn=exact_fn, **params)


def test_exhaustive_search_matches_naive(index):
    for k in (1, 10, 400):
        idx, sc = exhaustive_search(index["queries"], index["mask"], index["tokens"], index["offsets"], k,
                                    tile_tokens=97)
        ref_idx, ref_sc = exhaustive_naive(index, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(sc, ref_sc, rtol=1e-5)


def maxsim_naive_bf16(queries, mask, tokens, offsets):
    """MaxSim of every document as bf16 kernels compute it: inputs and each similarity rounded to bf16,
    the maxima summed in float32 (one small product per pair, in Python loops)."""
    import torch

    q, d = (torch.from_numpy(np.asarray(x, np.float32)).to(torch.bfloat16).double() for x in (queries, tokens))
    out = np.zeros((len(queries), len(offsets) - 1), np.float32)
    for i in range(len(queries)):
        qi = q[i][torch.from_numpy(np.asarray(mask[i], bool))]
        for j in range(len(offsets) - 1):
            sim = (d[offsets[j]:offsets[j + 1]] @ qi.T).to(torch.bfloat16).float()
            out[i, j] = sim.max(0).values.sum() if len(sim) and len(qi) else (0.0 if len(sim) else -np.inf)
    return out


def test_exhaustive_search_in_bf16_matches_its_naive_loop_and_maxsim(index):
    """bf16 search scores each document as bf16 MaxSim reranking does, so a stage scores alike first or later."""
    from cascade.kernels.maxsim import bf16_pays

    if not bf16_pays(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU (the search falls back to float32)")
    n = len(index["offsets"]) - 1
    ref = maxsim_naive_bf16(index["queries"], index["mask"], index["tokens"], index["offsets"])
    idx, sc = exhaustive_search(index["queries"], index["mask"], index["tokens"], index["offsets"], n,
                                tile_tokens=97, compute_dtype="bfloat16")
    got = np.full_like(ref, np.nan)
    np.put_along_axis(got, idx, sc, 1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    all_docs = np.broadcast_to(np.arange(n), (len(ref), n))
    rerank = maxsim(index["queries"], index["mask"], index["tokens"], index["offsets"], all_docs,
                    compute_dtype="bfloat16")
    np.testing.assert_allclose(got, rerank, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="compute_dtype"):
        exhaustive_search(index["queries"], index["mask"], index["tokens"], index["offsets"], 3, compute_dtype="fp8")


def test_exhaustive_search_with_queries_without_tokens(index):
    """A fully masked query (first, middle or last) scores 0 everywhere; the others are unaffected."""
    for empty in ([0], [5], [11], [0, 11]):
        mask = index["mask"].copy()
        mask[empty] = False
        idx, sc = exhaustive_search(index["queries"], mask, index["tokens"], index["offsets"], 10, tile_tokens=97)
        ref_idx, ref_sc = naive_topk(maxsim_naive(index["queries"], mask, index["tokens"], index["offsets"],
                                                  np.broadcast_to(np.arange(300), (12, 300))), 10)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(sc, ref_sc, rtol=1e-5)
        assert (sc[empty] == 0).all()


@pytest.mark.parametrize("k", [1, 10, 50])
@pytest.mark.parametrize("ndocs_factor,rerank", [(4, None), (1, "ndocs"), (10, None)])
def test_unpruned_plaid_equals_exhaustive(index, k, ndocs_factor, rerank):
    n, num_c = len(index["offsets"]) - 1, index["codec"].num_centroids
    ndocs = ndocs_factor * n
    idx, sc = search(index, k, ncells=num_c, centroid_score_threshold=-np.inf, ndocs=ndocs,
                     rerank_docs=ndocs if rerank else None, query_block=5)
    ref_idx, ref_sc = exhaustive_naive(index, k)
    assert idx.dtype == np.int64 and sc.dtype == np.float32 and idx.shape == sc.shape == (12, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-5)


def test_padding_when_few_candidates(index):
    idx, sc = search(index, 20, ncells=1, centroid_score_threshold=0.5, ndocs=8, rerank_docs=8)
    assert ((idx >= 0).sum(axis=1) <= 8).all() and (idx[:, 8:] == -1).all() and np.isneginf(sc[:, 8:]).all()
    assert np.all(np.diff(sc[:, :8], axis=1) <= 0)


def test_empty_query_and_empty_batch(index):
    mask = index["mask"].copy()
    mask[0] = False
    idx, sc = plaid_search(index["queries"], mask, index["codec"].centroids, index["codes"], index["offsets"],
                           *index["ivf"], k=5, ncells=2, centroid_score_threshold=0.4, ndocs=64,
                           exact_fn=lambda q, m, d: maxsim_naive(q, m, index["tokens"], index["offsets"], d))
    assert (idx[0] == -1).all() and np.isneginf(sc[0]).all() and (idx[1:, 0] >= 0).all()
    idx, sc = plaid_search(index["queries"][:0], mask[:0], index["codec"].centroids, index["codes"],
                           index["offsets"], *index["ivf"], k=5, ncells=2, centroid_score_threshold=0.4,
                           ndocs=64, exact_fn=None)
    assert idx.shape == (0, 5) and sc.shape == (0, 5)


def test_default_params_recall_on_clustered_data():
    tokens, offsets = make_corpus(1200, 64, 200, seed=5, min_len=20, max_len=80)
    codec = train_codec(tokens, num_centroids_for(len(tokens)), 2, seed=0, niter=10)
    codes, residuals = codec.compress(tokens)
    decompressed = codec.decompress(codes, residuals)
    ivf = build_ivf(codes, offsets, codec.num_centroids)
    queries, mask = make_queries(tokens, offsets, 40, 32, seed=6)
    exact_fn = residual_exact_fn(codec.decompress, codes, residuals, offsets, maxsim)
    recalls = {}
    for k in (10, 100):
        ref, _ = exhaustive_search(queries, mask, decompressed, offsets, k)
        idx, _ = plaid_search(queries, mask, codec.centroids, codes, offsets, *ivf, k=k, exact_fn=exact_fn,
                              **default_search_params(k))
        recalls[k] = np.mean([len(set(a) & set(b)) / k for a, b in zip(idx.tolist(), ref.tolist())])
    log.warning("recall vs exhaustive (1200 docs, %d centroids): %s", codec.num_centroids, recalls)
    print(f"\nrecall vs exhaustive (1200 docs, {codec.num_centroids} centroids): {recalls}")
    assert recalls[10] >= 0.9 and recalls[100] >= 0.85


def test_centroid_scores_in_bfloat16_and_plaid_with_them():
    """A bf16 centroid tensor gives float32 scores within bf16 rounding, and PLAID keeps its recall with it."""
    import torch

    tokens, offsets = make_corpus(1200, 64, 200, seed=5, min_len=20, max_len=80)
    codec = train_codec(tokens, num_centroids_for(len(tokens)), 2, seed=0, niter=10)
    bf16 = codec.centroids_tensor(torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and codec.centroids_tensor(torch.bfloat16) is bf16  # converted once
    queries, mask = make_queries(tokens, offsets, 40, 32, seed=6)
    valid = queries[0][mask[0]]  # unit vectors (the padding holds garbage)
    exact32, approx16 = centroid_scores(valid, codec.centroids), centroid_scores(valid, bf16)
    assert approx16.dtype == np.float32 and approx16.shape == exact32.shape == (len(valid), codec.num_centroids)
    np.testing.assert_allclose(approx16, exact32, atol=0.02)
    codes, residuals = codec.compress(tokens)
    ivf = build_ivf(codes, offsets, codec.num_centroids)
    exact_fn = residual_exact_fn(codec.decompress, codes, residuals, offsets, maxsim)
    ref, _ = exhaustive_search(queries, mask, codec.decompress(codes, residuals), offsets, 10)
    idx, _ = plaid_search(queries, mask, bf16, codes, offsets, *ivf, k=10, exact_fn=exact_fn,
                          **default_search_params(10))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx.tolist(), ref.tolist())]) >= 0.9


def test_ties_are_broken_by_doc_index():
    """Identical documents score identically at every stage: lower index first, whatever the order."""
    tokens, offsets = make_corpus(20, 16, 5, seed=7)
    perm = np.random.default_rng(0).permutation(20)
    # documents 20..59 repeat the first 20 documents (in shuffled order), twice
    lengths = np.diff(offsets)
    order = np.concatenate([np.arange(20), perm, perm[::-1]])
    tok = np.concatenate([tokens[offsets[d]:offsets[d + 1]] for d in order])
    off = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
    codec = train_codec(tok, 16, 2, seed=0)
    codes, residuals = codec.compress(tok)
    ivf = build_ivf(codes, off, codec.num_centroids)
    queries, mask = make_queries(tok, off, 6, 8, seed=8)
    exact_fn = residual_exact_fn(codec.decompress, codes, residuals, off, maxsim)
    results = [plaid_search(queries, mask, codec.centroids, codes, off, *ivf, k=30, ncells=4,
                            centroid_score_threshold=0.0, ndocs=60, rerank_docs=60, exact_fn=exact_fn,
                            query_block=qb) for qb in (1, 6)]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    idx, sc = results[0]
    for row_idx, row_sc in zip(idx, sc):
        for i in range(len(row_idx) - 1):
            assert row_sc[i] > row_sc[i + 1] or (row_sc[i] == row_sc[i + 1] and row_idx[i] < row_idx[i + 1])
        # every group of three copies appears consecutively, in index order
        assert len(set(row_sc.tolist())) <= 10


def test_prune_candidates(index):
    rng = np.random.default_rng(9)
    n = len(index["offsets"]) - 1
    cand = rng.integers(-1, n, (12, 40))
    cand[0] = -1
    cand[1, :30] = -1
    kept = prune_candidates(index["queries"], index["mask"], index["codec"].centroids, index["codes"],
                            index["offsets"], cand, keep=15)
    assert kept.shape == (12, 15) and kept.dtype == np.int64
    assert (kept[0] == -1).all()
    for q in range(12):
        docs = np.unique(cand[q][cand[q] >= 0])
        scores = centroid_scores(index["queries"][q][index["mask"][q]], index["codec"].centroids)
        approx = naive_approx(scores, index["codes"], index["offsets"], docs)
        expected = [d for _, d in sorted(zip(-approx, docs))][:15]
        assert kept[q, :len(expected)].tolist() == expected and (kept[q, len(expected):] == -1).all()
    pruned = prune_candidates(index["queries"], index["mask"], index["codec"].centroids, index["codes"],
                              index["offsets"], cand, keep=15, centroid_score_threshold=0.3)
    assert pruned.shape == (12, 15) and set(pruned[2].tolist()) <= set(cand[2].tolist())


def test_prune_candidates_empty_query(index):
    mask = index["mask"].copy()
    mask[0] = False
    cand = np.array([[5, 3, -1, 9]] * 12)
    kept = prune_candidates(index["queries"], mask, index["codec"].centroids, index["codes"], index["offsets"],
                            cand, keep=5, centroid_score_threshold=0.5)
    assert kept[0].tolist() == [3, 5, 9, -1, -1]  # no query tokens: all tie at 0, doc order


def test_exhaustive_search_scores_one_token_documents():
    """A document of a single token is scored like any other (and can rank first)."""
    rng = np.random.default_rng(5)
    tokens = rng.standard_normal((9, 8)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    offsets = np.array([0, 4, 5, 5, 9])  # lengths 4, 1, 0 (empty), 4
    queries = np.stack([tokens[4:5].repeat(2, axis=0), tokens[0:2]])  # query 0 is document 1's only token
    mask = np.ones((2, 2), bool)
    idx, sc = exhaustive_search(queries, mask, tokens, offsets, k=4, tile_tokens=3)
    ref = maxsim_naive(queries, mask, tokens, offsets, np.tile(np.arange(4), (2, 1)))
    assert idx[0, 0] == 1 and (idx[:, 3] == -1).all()  # the empty document is never returned
    for q in range(2):
        np.testing.assert_allclose(sc[q, :3], ref[q, idx[q, :3]], rtol=1e-5)


def test_residual_exact_fn_padding_stays_minus_inf(index):
    exact = residual_exact_fn(index["codec"].decompress, index["codes"], index["residuals"], index["offsets"],
                              maxsim)
    doc_idx = np.array([[3, -1, 7, -1], [-1, -1, -1, -1]])
    got = exact(index["queries"][:2], index["mask"][:2], doc_idx)
    ref = maxsim_naive(index["queries"][:2], index["mask"][:2], index["tokens"], index["offsets"], doc_idx)
    assert np.array_equal(np.isneginf(got), doc_idx < 0)
    np.testing.assert_allclose(got[doc_idx >= 0], ref[doc_idx >= 0], rtol=1e-5)


def test_cells_tied_at_the_cutoff_are_chosen_by_centroid_index():
    """With equal centroid scores, ncells picks the lowest centroid ids (a fixed, documented order)."""
    centroids = np.eye(4, dtype=np.float32)[[0, 1, 1, 1, 2]]  # centroids 1, 2, 3 are the same vector
    codes = np.array([0, 1, 2, 3, 4], np.int64)
    offsets = np.arange(6)
    ivf = build_ivf(codes, offsets, 5)
    query = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)  # scores 1 on centroids 1, 2, 3
    got = plaid_candidates(query, centroids, codes, offsets, *ivf, ncells=2, centroid_score_threshold=-1.0,
                           ndocs=10, rerank_docs=10)
    assert sorted(got.tolist()) == [1, 2]


def test_cells_tied_below_a_better_cell_fill_the_remaining_slots_by_id():
    centroids = np.eye(4, dtype=np.float32)[[0, 1, 1, 1, 2]]
    centroids[0] = np.array([0.6, 0.8, 0, 0], np.float32)  # centroid 0 scores 0.8 < 1 on the query
    codes, offsets = np.arange(5, dtype=np.int64), np.arange(6)
    ivf = build_ivf(codes, offsets, 5)
    query = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)  # 1.0 on centroids 1, 2, 3; 0.8 on 0
    got = plaid_candidates(query, centroids, codes, offsets, *ivf, ncells=2, centroid_score_threshold=-1.0,
                           ndocs=10, rerank_docs=10)
    assert sorted(got.tolist()) == [1, 2]
    query = np.array([[0.0, 0.0, 1.0, 0.0]], np.float32)  # 1.0 on centroid 4, then 0 on 0, 1, 2, 3
    got = plaid_candidates(query, centroids, codes, offsets, *ivf, ncells=2, centroid_score_threshold=-1.0,
                           ndocs=10, rerank_docs=10)
    assert sorted(got.tolist()) == [0, 4]  # one slot left for the four tied cells: the lowest id


@pytest.mark.parametrize("n", [4, 5, 6, 9])
def test_top_keeps_the_best_count_ties_by_document(n):
    from cascade.kernels.plaid import _top

    rng = np.random.default_rng(n)
    docs = np.sort(rng.choice(100, n, replace=False))
    scores = rng.integers(0, 3, n).astype(np.float32)  # many ties
    for count in range(1, n + 1):
        expected = [d for _, d in sorted(zip(-scores, docs))][:count]
        assert _top(docs, scores, count).tolist() == expected


def test_prune_candidates_with_a_threshold_skips_pruned_codes(index):
    rng = np.random.default_rng(11)
    n = len(index["offsets"]) - 1
    cand = rng.integers(0, n, (12, 40))
    pruned = prune_candidates(index["queries"], index["mask"], index["codec"].centroids, index["codes"],
                              index["offsets"], cand, keep=10, centroid_score_threshold=0.3)
    for q in range(12):
        docs = np.unique(cand[q])
        scores = centroid_scores(index["queries"][q][index["mask"][q]], index["codec"].centroids)
        approx = naive_approx(scores, index["codes"], index["offsets"], docs, keep=scores.max(axis=0) >= 0.3)
        expected = [d for _, d in sorted(zip(-approx, docs))][:10]
        assert pruned[q].tolist() == expected
