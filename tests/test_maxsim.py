"""The scoring kernels against naive references: MaxSim, candidate dot products, exact top-k."""
import numpy as np
import pytest
import torch

from cascade.kernels.dense import dot_scores, topk_dot
from cascade.kernels.maxsim import maxsim, maxsim_naive


def _index(rng, num_docs=60, dim=24, max_len=30, dtype=np.float16):
    lengths = rng.integers(1, max_len, num_docs)
    lengths[3] = 0  # a document without tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.standard_normal((offsets[-1], dim)).astype(dtype)
    return tokens, offsets


def _queries(rng, num_q=6, lq=9, dim=24):
    q = rng.standard_normal((num_q, lq, dim)).astype(np.float32)
    mask = rng.random((num_q, lq)) > 0.25
    mask[:, 0] = True
    return q, mask


def _candidates(rng, num_q, num_docs, k=15):
    idx = np.stack([rng.choice(num_docs, k, replace=False) for _ in range(num_q)])
    idx[1, 10:] = -1  # padding
    idx[2, 1:] = -1
    idx[0, 4] = 3  # the empty document
    return idx


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("block_rows", [1 << 20, 40])
def test_maxsim_equals_naive_loop(dtype, block_rows):
    rng = np.random.default_rng(0)
    tokens, offsets = _index(rng, dtype=dtype)
    q, mask = _queries(rng)
    idx = _candidates(rng, len(q), len(offsets) - 1)
    fast = maxsim(q, mask, tokens, offsets, idx, block_rows=block_rows)
    slow = maxsim_naive(q, mask, tokens, offsets, idx)
    assert fast.shape == idx.shape and fast.dtype == np.float32
    assert np.array_equal(np.isneginf(fast), np.isneginf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-5, atol=1e-4)


def test_maxsim_padding_and_empty_documents_are_minus_inf():
    rng = np.random.default_rng(1)
    tokens, offsets = _index(rng)
    q, mask = _queries(rng)
    idx = _candidates(rng, len(q), len(offsets) - 1)
    out = maxsim(q, mask, tokens, offsets, idx)
    assert np.isneginf(out[idx < 0]).all()
    assert np.isneginf(out[0, 4])  # the document with no tokens
    assert np.isfinite(out[(idx >= 0) & (idx != 3)]).all()


def test_maxsim_is_invariant_to_padding_length():
    """Extra query-token padding or extra candidate padding changes no score."""
    rng = np.random.default_rng(2)
    tokens, offsets = _index(rng)
    # all similarities negative: a padded position read as 0 would win every max; -inf never does
    tokens = -np.abs(tokens)
    q, mask = _queries(rng)
    q = np.abs(q)
    idx = _candidates(rng, len(q), len(offsets) - 1)
    base = maxsim(q, mask, tokens, offsets, idx)
    q_pad = np.concatenate([q, rng.standard_normal((len(q), 7, q.shape[2])).astype(np.float32)], axis=1)
    mask_pad = np.concatenate([mask, np.zeros((len(q), 7), bool)], axis=1)
    idx_pad = np.concatenate([idx, np.full((len(q), 5), -1)], axis=1)
    padded = maxsim(q_pad, mask_pad, tokens, offsets, idx_pad)
    np.testing.assert_allclose(padded[:, : idx.shape[1]], base, rtol=1e-6)
    assert np.isneginf(padded[:, idx.shape[1]:]).all()
    assert (base[np.isfinite(base)] < 0).all()


def test_maxsim_batched_over_queries_equals_one_query_at_a_time():
    rng = np.random.default_rng(3)
    tokens, offsets = _index(rng)
    q, mask = _queries(rng)
    idx = _candidates(rng, len(q), len(offsets) - 1)
    together = maxsim(q, mask, tokens, offsets, idx)
    alone = np.concatenate([maxsim(q[i:i + 1], mask[i:i + 1], tokens, offsets, idx[i:i + 1]) for i in range(len(q))])
    np.testing.assert_allclose(together, alone, rtol=1e-6)


def test_maxsim_never_builds_a_4d_tensor(monkeypatch):
    seen = []
    real_bmm, real_scatter = torch.bmm, torch.Tensor.scatter_reduce_

    def bmm(a, b):
        seen.extend([a.dim(), b.dim()])
        return real_bmm(a, b)

    def scatter(self, *args, **kwargs):
        seen.append(self.dim())
        return real_scatter(self, *args, **kwargs)

    monkeypatch.setattr(torch, "bmm", bmm)
    monkeypatch.setattr(torch.Tensor, "scatter_reduce_", scatter)
    rng = np.random.default_rng(4)
    tokens, offsets = _index(rng)
    q, mask = _queries(rng)
    maxsim(q, mask, tokens, offsets, _candidates(rng, len(q), len(offsets) - 1))
    assert seen and max(seen) <= 3  # the kernel folds rows into (candidates, query tokens) maxima: 2-D


def test_maxsim_with_no_candidates():
    rng = np.random.default_rng(5)
    tokens, offsets = _index(rng)
    q, mask = _queries(rng, num_q=2)
    assert maxsim(q, mask, tokens, offsets, np.zeros((2, 0), np.int64)).shape == (2, 0)
    assert np.isneginf(maxsim(q, mask, tokens, offsets, np.full((2, 3), -1))).all()


def test_dot_scores_match_numpy():
    rng = np.random.default_rng(6)
    docs = rng.standard_normal((40, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    idx = np.array([[5, 1, 39], [0, -1, -1], [7, 7, 2]])
    out = dot_scores(queries, docs, idx)
    for q in range(3):
        for j, d in enumerate(idx[q]):
            expected = -np.inf if d < 0 else queries[q] @ docs[d]
            assert out[q, j] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_topk_dot_is_exact_in_any_chunking(chunk):
    rng = np.random.default_rng(7)
    # small integers: exact dot products, so many documents tie, also at the cutoff of 25
    docs = rng.integers(-2, 3, (300, 16)).astype(np.float32)
    queries = rng.integers(-1, 2, (5, 16)).astype(np.float32)
    idx, scores = topk_dot(queries, docs, 25, chunk_size=chunk, query_block=2)
    full = queries @ docs.T
    boundary_ties = 0
    for q in range(5):
        ranked = np.lexsort((np.arange(300), -full[q].astype(np.float64)))
        assert list(idx[q]) == list(ranked[:25])
        np.testing.assert_array_equal(scores[q], full[q][ranked[:25]])
        boundary_ties += int(full[q, ranked[24]] == full[q, ranked[25]])
    assert boundary_ties == 5  # every query has a tie across the cutoff
    assert topk_dot(queries, docs, 1000)[0].shape == (5, 300)  # k larger than the corpus
