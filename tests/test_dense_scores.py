"""dot_scores (the bi-encoder's candidate scoring) against its gathered reference, across blockings."""
from __future__ import annotations

import numpy as np
import pytest

from cascade.kernels.dense import dot_scores, dot_scores_gathered, topk_dot


def _data(seed: int, num_docs: int = 300, num_q: int = 9, k: int = 40, dim: int = 48):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((num_docs, dim)).astype(np.float32)
    queries = rng.standard_normal((num_q, dim)).astype(np.float32)
    idx = rng.integers(0, num_docs, (num_q, k))
    idx[rng.random(idx.shape) < 0.2] = -1  # padding anywhere
    return queries, docs, idx


# tiles of one row (column chunks of one query), of part of a query, of a few queries, of everything
@pytest.mark.parametrize("tile_elements", [1, 48 * 7, 48 * 100, 1 << 19])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dot_scores_are_the_gathered_reference_bit_for_bit(tile_elements, dtype):
    queries, docs, idx = _data(1)
    docs = docs.astype(dtype)
    out = dot_scores(queries, docs, idx, tile_elements=tile_elements)
    ref = dot_scores_gathered(queries, docs, idx)
    assert out.dtype == np.float32 and out.shape == idx.shape
    assert np.array_equal(np.isneginf(out), idx < 0)
    assert np.array_equal(out, ref)
    for q, row in enumerate(idx):  # each candidate against a plain dot product
        for j, d in enumerate(row):
            if d >= 0:
                assert out[q, j] == pytest.approx(float(queries[q] @ docs[d]), rel=1e-4, abs=1e-4)


def test_a_query_scores_alike_alone_in_a_batch_and_in_any_block():
    queries, docs, idx = _data(2, num_docs=500, num_q=13, k=60)
    batch = dot_scores(queries, docs, idx)
    for tile_elements in (1, 48 * 200, 48 * 1000):  # tiles of one row, of a few queries, of all
        assert np.array_equal(dot_scores(queries, docs, idx, tile_elements=tile_elements), batch)
    for q in range(len(queries)):
        assert np.array_equal(dot_scores(queries[q:q + 1], docs, idx[q:q + 1]), batch[q:q + 1])


def test_rescoring_gives_the_retrieval_scores_and_equal_documents_tie():
    queries, docs, _ = _data(3, num_docs=400, num_q=5)
    docs[7] = docs[300]  # two equal documents
    idx, scores = topk_dot(queries, docs, 50)
    np.testing.assert_allclose(dot_scores(queries, docs, idx), scores, rtol=1e-5, atol=1e-5)
    both = np.tile([[7, 300]], (len(queries), 1))
    out = dot_scores(queries, docs, both)
    assert np.array_equal(out[:, 0], out[:, 1])


def test_memory_mapped_vectors_and_empty_inputs(tmp_path):
    queries, docs, idx = _data(4)
    np.save(tmp_path / "v.npy", docs)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    assert np.array_equal(dot_scores(queries, mapped, idx), dot_scores(queries, docs, idx))
    assert np.isneginf(dot_scores(queries, docs, np.full((len(queries), 3), -1))).all()
    assert np.isneginf(dot_scores(queries[:2], docs[:0], np.full((2, 4), -1))).all()
    assert dot_scores(queries, docs, np.zeros((len(queries), 0), np.int64)).shape == (len(queries), 0)


def test_mismatched_candidates_are_a_clear_error():
    queries, docs, idx = _data(5)
    with pytest.raises(ValueError, match=r"doc_idx must be \(Q, K\)"):
        dot_scores(queries, docs, idx[:-1])
