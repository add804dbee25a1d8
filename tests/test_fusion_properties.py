"""Property tests of score fusion (zscore, minmax, rrf) against naive per-row references.

Scores are small integers (many ties) or floats; masks have padding anywhere in a row.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cascade import Batch, Candidates, Corpus, Fusion
from cascade.core.fusion import normalize
from cascade.core.stage import Stage

SETTINGS = settings(max_examples=200, deadline=None)


def naive(row: list[float], valid: list[bool], method: str, rrf_k: float) -> list[float]:
    """One row, in plain Python: the normalized value of each valid entry, 0 at padding."""
    vals = [x for x, v in zip(row, valid) if v]
    out = []
    for x, v in zip(row, valid):
        if not v:
            out.append(0.0)
        elif method == "rrf":
            out.append(1.0 / (rrf_k + 1 + sum(y > x for y in vals)))  # ties share the best rank
        elif method == "minmax":
            lo, hi = min(vals), max(vals)
            out.append((x - lo) / (hi - lo) if hi > lo else 0.0)
        else:
            mean = sum(vals) / len(vals)
            std = (sum((y - mean) ** 2 for y in vals) / len(vals)) ** 0.5
            out.append((x - mean) / std if std > 0 else x - mean)
    return out


@st.composite
def rows(draw):
    """(scores, mask) of shape (Q, K): integer scores in a small range (ties) or floats."""
    num_q, num_k = draw(st.integers(0, 4)), draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        scores = rng.integers(-3, 4, (num_q, num_k)).astype(np.float64)
    else:
        scores = rng.standard_normal((num_q, num_k)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    mask = rng.random((num_q, num_k)) < draw(st.sampled_from([0.5, 0.8, 1.0]))
    scores = np.where(mask, scores, draw(st.sampled_from([0.0, -np.inf, 7.0])))  # padding holds anything
    return scores, mask


@SETTINGS
@given(data=rows(), method=st.sampled_from(["zscore", "minmax", "rrf"]), rrf_k=st.sampled_from([0.0, 1.0, 60.0]))
def test_normalize_matches_naive(data, method, rrf_k):
    scores, mask = data
    got = normalize(scores, mask, method, rrf_k)
    assert got.shape == scores.shape and not np.isnan(got).any()
    for q in range(scores.shape[0]):
        want = naive(scores[q].tolist(), mask[q].tolist(), method, rrf_k)
        np.testing.assert_allclose(got[q], want, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(data=rows(), method=st.sampled_from(["zscore", "minmax", "rrf"]), seed=st.integers(0, 1000))
def test_normalize_does_not_depend_on_candidate_order(data, method, seed):
    """Permuting a row's entries permutes its normalized values (RRF ties included)."""
    scores, mask = data
    perm = np.random.default_rng(seed).permutation(scores.shape[1])
    np.testing.assert_allclose(normalize(scores[:, perm], mask[:, perm], method),
                               normalize(scores, mask, method)[:, perm], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(incoming=rows(), seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["zscore", "minmax", "rrf"]),
       w_in=st.sampled_from([0.0, 0.3, 1.0, 2.5]), w_own=st.sampled_from([0.0, 0.7, 1.0]),
       rrf_k=st.sampled_from([1.0, 60.0]))
def test_fusion_is_the_weighted_sum_of_naive_normalizations(incoming, seed, method, w_in, w_own, rrf_k):
    if w_in + w_own == 0:
        w_own = 1.0
    scores_in, mask = incoming
    own = np.random.default_rng(seed).integers(-2, 3, scores_in.shape).astype(np.float32)
    fused = Fusion(method, w_in, w_own, rrf_k)(scores_in, own, mask)
    assert fused.dtype == np.float32 and np.isneginf(fused[~mask]).all() and np.isfinite(fused[mask]).all()
    for q in range(mask.shape[0]):
        a = naive(scores_in[q].tolist(), mask[q].tolist(), method, rrf_k)
        b = naive(own[q].astype(float).tolist(), mask[q].tolist(), method, rrf_k)
        want = [w_in * x + w_own * y for x, y in zip(a, b)]
        np.testing.assert_allclose(fused[q][mask[q]], np.array(want)[mask[q]], rtol=1e-5, atol=1e-6)


def test_rrf_ties_share_a_rank():
    scores = np.array([[5.0, 3.0, 5.0, 1.0, 3.0, 0.0]])
    mask = np.array([[True, True, True, True, True, False]])
    got = normalize(scores, mask, "rrf", rrf_k=10)
    np.testing.assert_allclose(got, [[1 / 11, 1 / 13, 1 / 11, 1 / 15, 1 / 13, 0.0]])


class _Constant(Stage):
    """Scores every candidate 1.0: the fused order is decided by the incoming scores and ties."""

    def score(self, batch: Batch) -> np.ndarray:
        assert batch.candidates is not None  # a reranker is scored on candidates
        return np.ones(batch.candidates.doc_idx.shape, np.float32)


@pytest.mark.parametrize("method", ["zscore", "minmax", "rrf"])
def test_fused_ties_come_out_in_document_order_at_the_cutoff(method):
    """Equal incoming and own scores fuse to equal scores; the cutoff keeps the lowest documents."""
    corpus = Corpus([f"d{i}" for i in range(8)], ["x"] * 8)
    incoming = Candidates(np.array([[6, 2, 7, 1, 5, 3, 0, 4]]), np.array([[9, 4, 4, 4, 4, 4, 1, 1]], np.float32))
    stage = _Constant(k=3, fusion=Fusion(method, 0.5, 0.5))
    out = stage.rerank(Batch(["q"], corpus, incoming)).candidates
    assert out.doc_idx.tolist() == [[6, 1, 2]]
    assert out.scores[0, 1] == out.scores[0, 2]
