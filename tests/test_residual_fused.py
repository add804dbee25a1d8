"""The fused residual kernel (lookup tables of q . r, no decoded vectors) against naive loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cascade.kernels import residual_fused
from cascade.kernels.maxsim import maxsim, maxsim_naive
from cascade.kernels.residual import train_codec

needs_numba = pytest.mark.skipif(not residual_fused.available(), reason="numba not installed")


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def index():
    rng = np.random.default_rng(0)
    data = unit(rng.standard_normal((2000, 32)))
    codecs = {nbits: train_codec(data, 16, nbits, niter=4) for nbits in (1, 2, 4)}
    return data, codecs


def _stored(codec, vectors, tmp_path=None):
    codes, res = codec.compress(vectors)
    deltas = codec.norm_deltas(codes, res)
    if tmp_path is not None:  # read-only memory maps, as an opened index
        np.save(tmp_path / "res.npy", res)
        res = np.load(tmp_path / "res.npy", mmap_mode="r")
    return codes, res, deltas


@needs_numba
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("lv", [1, 13, 16, 17, 40])  # one group of 16 query tokens, partial, several
def test_score_rows_match_the_naive_loop(index, nbits, lv, tmp_path):
    data, codecs = index
    codec = codecs[nbits]
    codes, res, deltas = _stored(codec, data[:300], tmp_path)
    rng = np.random.default_rng(nbits * 100 + lv)
    q = torch.from_numpy(rng.standard_normal((32, lv)).astype(np.float32))
    lut = residual_fused.lookup_tables(q, codec.bucket_weights, nbits)
    assert lut.shape == (-(-lv // 16), 32 * nbits // 8, 256, 16)  # groups of 16 query tokens
    cs = np.zeros((codec.num_centroids, 16 * len(lut)), np.float32)
    cs[:, :lv] = np.asarray(codec.centroids, np.float32) @ q.numpy()
    for rows in (rng.integers(0, 300, 57), np.array([5]), np.array([7, 7])):  # a one-row tile, a repeated row
        out = residual_fused.score_rows(lut, cs, codes[rows].astype(np.int64), deltas[rows].astype(np.float32) + 1,
                                        res, rows.astype(np.int64))
        ref = residual_fused.score_rows_naive(q.numpy(), codec.centroids, codes, res, deltas, codec.bucket_weights,
                                              nbits, rows)
        np.testing.assert_allclose(out[:, :lv], ref, atol=2e-5)
        assert not out[:, lv:].any()  # the padding columns score 0


@pytest.mark.parametrize("kernel", [pytest.param("fused", marks=needs_numba), "torch"])
@pytest.mark.parametrize("tile_elements", [32, 64, 1 << 20])  # one-row tiles, two-row tiles, one tile
def test_maxsim_with_the_fused_scorer_equals_decompress_then_naive(index, kernel, tile_elements):
    data, codecs = index
    codec = codecs[2]
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 7, 25)  # empty documents included
    offsets = np.r_[0, np.cumsum(lengths)]
    codes, res, deltas = _stored(codec, data[rng.integers(0, len(data), offsets[-1])])
    queries = unit(rng.standard_normal((5, 20, 32)))
    mask = rng.random((5, 20)) < 0.7
    mask[2] = False  # a query with every position masked
    doc_idx = rng.integers(0, 25, (5, 9))
    doc_idx[:, -2:] = -1  # padding
    expected = maxsim_naive(queries, mask, codec.decompress(codes, res, deltas=deltas), offsets, doc_idx)
    got = maxsim(queries, mask, None, offsets, doc_idx, tile_elements=tile_elements,
                 scorer=codec.scorer(codes, res, deltas, kernel=kernel))
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))  # padding and empty documents
    assert np.isneginf(got[:, -2:]).all()
    live = lengths[doc_idx[2][doc_idx[2] >= 0]] > 0
    assert (got[2][:7][live] == 0).all()  # all masked: 0 against documents with tokens
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], atol=1e-5)


@needs_numba
def test_auto_picks_the_fused_kernel_and_falls_back_to_torch(index, monkeypatch):
    data, codecs = index
    codec = codecs[2]
    codes, res, deltas = _stored(codec, data[:50])
    q = torch.from_numpy(unit(np.random.default_rng(4).standard_normal((3, 32))).T.copy())
    rows = np.arange(50)
    calls = []
    real = residual_fused.fused_tile
    monkeypatch.setattr(residual_fused, "fused_tile", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = codec.scorer(codes, res, deltas)(q, rows)(rows)
    assert calls == [1]
    monkeypatch.setattr(residual_fused, "available", lambda: False)
    plain = codec.scorer(codes, res, deltas)(q, rows)(rows)
    assert calls == [1]  # numba missing: the torch tile
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="pip install numba"):
        codec.scorer(codes, res, deltas, kernel="fused")


def test_unknown_kernel_is_a_clear_error(index):
    data, codecs = index
    codes, res, deltas = _stored(codecs[2], data[:10])
    with pytest.raises(ValueError, match="kernel must be one of auto, fused, torch"):
        codecs[2].scorer(codes, res, deltas, kernel="numba")
