"""The compressed-index MaxSim scorer (no decompression) against decompress-then-naive MaxSim."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascade.kernels import residual_fused
from cascade.kernels.maxsim import maxsim, maxsim_naive
from cascade.kernels.residual import train_codec


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def codecs():
    rng = np.random.default_rng(0)
    centers = unit(rng.standard_normal((12, 32)))
    data = unit(centers[rng.integers(0, 12, 3000)] + 0.6 * rng.standard_normal((3000, 32)) / np.sqrt(32))
    return data, {nbits: train_codec(data, 16, nbits, niter=4) for nbits in (1, 2, 4)}


def test_norm_deltas_rebuild_the_unit_vectors(codecs):
    data, all_codecs = codecs
    codec = all_codecs[2]
    codes, res = codec.compress(data[:500])
    raw = codec._decode(codes, res)
    deltas = codec.norm_deltas(codes, res)
    assert deltas.dtype == np.float16 and deltas.shape == (500,)
    np.testing.assert_allclose(deltas.astype(np.float32), 1 / np.linalg.norm(raw, axis=1) - 1, atol=1e-3)
    # (1 + delta) rescales centroid + residual to the unit vector decompress returns
    np.testing.assert_allclose(codec.decompress(codes, res, deltas=deltas), codec.decompress(codes, res),
                               atol=2e-4)
    zero = codec.norm_deltas(np.zeros(0, np.int32), res[:0])
    assert zero.shape == (0,)


KERNELS = ["torch", pytest.param("fused", marks=pytest.mark.skipif(not residual_fused.available(),
                                                                  reason="numba not installed"))]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("nbits", [1, 2, 4])
@given(data=st.data())
@settings(max_examples=15, deadline=None)
def test_scorer_maxsim_equals_decompress_then_naive(codecs, nbits, kernel, data):
    vectors, all_codecs = codecs
    codec = all_codecs[nbits]
    seed = data.draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, data.draw(st.integers(1, 12)))  # empty documents included
    offsets = np.r_[0, np.cumsum(lengths)]
    codes, res = codec.compress(vectors[rng.integers(0, len(vectors), offsets[-1])])
    deltas = codec.norm_deltas(codes, res)
    num_q, lq, k = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 7))
    queries = unit(rng.standard_normal((num_q, lq, 32)))
    mask = rng.random((num_q, lq)) < 0.8
    doc_idx = rng.integers(-1, len(lengths), (num_q, k))
    tile = data.draw(st.sampled_from([32, 64, 96, 1 << 20]))  # 1-3 rows per tile: many tiles per document
    block = data.draw(st.sampled_from([1, 5, 1 << 20]))
    expected = maxsim_naive(queries, mask, codec.decompress(codes, res, deltas=deltas), offsets, doc_idx)
    subset = data.draw(st.sampled_from([0.0, 2.0]))  # all centroid scores, or only the ones the rows use
    got = maxsim(queries, mask, None, offsets, doc_idx, block_rows=block, tile_elements=tile,
                 scorer=codec.scorer(codes, res, deltas, subset_fraction=subset, kernel=kernel))
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], atol=1e-5)


def test_scorer_bfloat16_stays_close(codecs):
    vectors, all_codecs = codecs
    codec = all_codecs[2]
    rng = np.random.default_rng(1)
    offsets = np.r_[0, np.cumsum(rng.integers(1, 20, 30))]
    codes, res = codec.compress(vectors[rng.integers(0, len(vectors), offsets[-1])])
    queries, mask = unit(rng.standard_normal((3, 8, 32))), np.ones((3, 8), bool)
    doc_idx = np.tile(np.arange(30), (3, 1))
    expected = maxsim_naive(queries, mask, codec.decompress(codes, res), offsets, doc_idx)
    got = maxsim(queries, mask, None, offsets, doc_idx, compute_dtype="bfloat16",
                 scorer=codec.scorer(codes, res, codec.norm_deltas(codes, res), torch.bfloat16))
    np.testing.assert_allclose(got, expected, atol=0.05)
