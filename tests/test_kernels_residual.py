"""Tests for residual.py: packing, codec round trip, bucket fitting, validation."""
import logging

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cascade.kernels.bitpack import check_nbits, pack_buckets, unpack_buckets
from cascade.kernels.residual import ResidualCodec, num_centroids_for, train_codec


def clustered(n, dim, num_clusters, noise, seed=0):
    """Unit vectors drawn around random unit cluster centres (cosine to centre ~ 1/sqrt(1+noise^2))."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, num_clusters, n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pack_naive(buckets, nbits):
    """One bit at a time: dimension bits LSB first, bytes MSB first."""
    n, dim = buckets.shape
    stream = [[(int(b) >> j) & 1 for b in row for j in range(nbits)] for row in buckets]
    return np.array([[int("".join(map(str, s[i:i + 8])), 2) for i in range(0, len(s), 8)] for s in stream],
                    np.uint8).reshape(n, dim * nbits // 8)


@pytest.mark.parametrize("nbits", [1, 2, 4])
@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_pack_unpack_round_trip(nbits, data):
    n = data.draw(st.integers(0, 6))
    dim = 8 * data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    buckets = np.random.default_rng(seed).integers(0, 2 ** nbits, (n, dim)).astype(np.uint8)
    packed = pack_buckets(buckets, nbits)
    assert packed.shape == (n, dim * nbits // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_buckets(packed, nbits), buckets)
    if n:
        np.testing.assert_array_equal(packed, pack_naive(buckets, nbits))


def test_num_centroids_for():
    assert num_centroids_for(4_000_000) == 16384  # 16 * 2000 = 32000 -> 2**14
    assert num_centroids_for(10_000_000) == 32768
    assert num_centroids_for(100) == 100 and num_centroids_for(1000) == 256
    assert num_centroids_for(1) == 1 and num_centroids_for(0) == 1


@pytest.mark.parametrize("nbits", [0, 3, 8, -1])
def test_nbits_validation(nbits):
    with pytest.raises(ValueError, match="nbits must be one of"):
        train_codec(clustered(200, 16, 4, 0.5), 8, nbits)


def test_dim_not_packable():
    with pytest.raises(ValueError, match="divisible by 8"):
        check_nbits(1, 12)
    with pytest.raises(ValueError, match="divisible by 8"):
        train_codec(clustered(200, 12, 4, 0.5), 8, 1)
    with pytest.raises(ValueError, match="divisible by 8"):
        ResidualCodec(np.zeros((2, 6), np.float32), np.zeros(3, np.float32), np.zeros(4, np.float32), 2, 6)
    check_nbits(2, 12)  # 24 bits: fine


@pytest.fixture(scope="module")
def data():
    return clustered(12_000, 64, 64, 0.6, seed=1)


@pytest.fixture(scope="module")
def codecs(data):
    first = train_codec(data, 128, 2, seed=0)
    return {nbits: train_codec(data, 128, nbits, seed=0, centroids=first.centroids) for nbits in (1, 2, 4)}


def test_codec_shapes_and_buckets(codecs, data):
    for nbits, codec in codecs.items():
        assert codec.centroids.shape == (128, 64) and codec.nbits == nbits and codec.dim == 64
        assert codec.centroids.dtype == np.float16  # stored and used as float16 (unit to fp16 rounding)
        np.testing.assert_allclose(np.linalg.norm(codec.centroids.astype(np.float32), axis=1), 1, atol=2e-3)
        assert codec.bucket_cutoffs.shape == (2 ** nbits - 1,) and codec.bucket_weights.shape == (2 ** nbits,)
        assert np.all(np.diff(codec.bucket_cutoffs) > 0) and np.all(np.diff(codec.bucket_weights) > 0)
        # each weight lies inside its bucket
        edges = np.concatenate([[-np.inf], codec.bucket_cutoffs, [np.inf]])
        assert np.all((edges[:-1] <= codec.bucket_weights) & (codec.bucket_weights <= edges[1:]))
        codes, residuals = codec.compress(data[:100])
        assert codes.dtype == np.int32 and residuals.dtype == np.uint8 and residuals.shape == (100, 64 * nbits // 8)
        assert codec.bytes_per_token == 4 + 64 * nbits // 8


def test_assignment_is_nearest_centroid_by_inner_product(codecs, data):
    codec = codecs[2]
    codes = codec.assign(data[:3000], chunk=700)  # several chunks
    sims = data[:3000] @ codec.centroids.T
    np.testing.assert_allclose(sims[np.arange(3000), codes], sims.max(axis=1), atol=1e-6)


def test_reconstruction_improves_with_nbits(codecs, data):
    x = data[:4000]
    errors, cosines = {}, {}
    centroid_only = codecs[1].centroids[codecs[1].assign(x)]
    for nbits, codec in codecs.items():
        y = codec.decompress(*codec.compress(x, chunk=1500), chunk=1000)
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
        errors[nbits] = float(np.mean(np.linalg.norm(x - y, axis=1)))
        cosines[nbits] = float(np.mean(np.sum(x * y, axis=1)))
    base = float(np.mean(np.linalg.norm(x - centroid_only, axis=1)))
    assert base > errors[1] > errors[2] > errors[4]
    assert cosines[1] > 0.9 and cosines[2] > 0.95 and cosines[4] > 0.99, cosines


def test_maxsim_preserved_on_realistic_data(codecs, data):
    """Inner products between decompressed tokens and fresh queries track the originals."""
    codec = codecs[2]
    q = clustered(50, 64, 64, 0.6, seed=1)  # same centres (same seed), new noise draw
    y = codec.decompress(*codec.compress(data[:2000]))
    exact, approx = q @ data[:2000].T, q @ y.T
    assert np.abs(exact - approx).mean() < 0.05
    assert np.corrcoef(exact.ravel(), approx.ravel())[0, 1] > 0.97


def test_compress_reuses_codes_and_float16(codecs, data):
    codes, res = codecs[2].compress(data[:500])
    codes2, res2 = codecs[4].compress(data[:500], codes=codes)
    np.testing.assert_array_equal(codes2, codes)
    np.testing.assert_array_equal(codes, codecs[4].compress(data[:500])[0])
    half = ResidualCodec(codecs[2].centroids.astype(np.float16), codecs[2].bucket_cutoffs,
                         codecs[2].bucket_weights, 2, 64)
    y16 = half.decompress(*half.compress(data[:500].astype(np.float16)), dtype=np.float16)
    y32 = codecs[2].decompress(codes, res)
    # float16 rounding may move a residual across a cutoff: compare on average
    assert y16.dtype == np.float16 and np.abs(y16.astype(np.float32) - y32).mean() < 2e-3


def test_small_sample_reduces_centroids(caplog):
    x = clustered(40, 16, 4, 0.5)
    with caplog.at_level(logging.WARNING, logger="residual"):
        codec = train_codec(x, 64, 2)
    assert codec.num_centroids == 38  # 40 points minus a 5% heldout of 2
    assert any("fewer than 64 centroids" in r.getMessage() for r in caplog.records)
    y = codec.decompress(*codec.compress(x))
    assert np.mean(np.sum(x * y, axis=1)) > 0.9


def test_tiny_sample_without_heldout():
    x = clustered(5, 8, 2, 0.5)
    codec = train_codec(x, 2, 1)
    codes, res = codec.compress(x)
    assert res.shape == (5, 1) and codec.decompress(codes, res).shape == (5, 8)


def test_bad_shapes(codecs, data):
    with pytest.raises(ValueError):
        codecs[2].compress(data[:, :32])
    codes, res = codecs[2].compress(data[:10])
    with pytest.raises(ValueError):
        codecs[2].decompress(codes, res[:, :8])


def test_empty_input(codecs):
    for nbits, codec in codecs.items():
        codes, res = codec.compress(np.zeros((0, 64), np.float32))
        assert codes.shape == (0,) and res.shape == (0, 64 * nbits // 8)
        assert codec.decompress(codes, res).shape == (0, 64)


def test_codec_rejects_wrong_bucket_shapes_with_the_expected_counts():
    centroids = np.eye(4, dtype=np.float32)
    ok_cut, ok_w = np.zeros(3, np.float32), np.zeros(4, np.float32)
    ResidualCodec(centroids, ok_cut, ok_w, 2, 4)
    for cut, w in [(np.zeros(2, np.float32), ok_w), (ok_cut, np.zeros(3, np.float32))]:  # either one wrong
        with pytest.raises(ValueError, match=r"^need 3 cutoffs and 4 weights for nbits=2$"):
            ResidualCodec(centroids, cut, w, 2, 4)
    codec = ResidualCodec(centroids, ok_cut, ok_w, 2, 4)
    assert codec.bytes_per_token == 5 and isinstance(codec.bytes_per_token, int)
    with pytest.raises(ValueError, match=r"^residuals must be \(2, 1\), got \(2, 2\)$"):
        codec.decompress(np.zeros(2, np.int32), np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("nbits", [1, 2, 4])
@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_compress_equals_searchsorted_then_naive_pack(nbits, data):
    """The uint8 torch bucketing/packing in ``compress`` equals searchsorted (side=left) + bit-by-bit packing,
    values exactly on a cutoff included, across chunk boundaries."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    dim, n, num_c = 8 * data.draw(st.integers(1, 4)), data.draw(st.integers(1, 9)), 5
    centroids = rng.standard_normal((num_c, dim)).astype(np.float32)
    cutoffs = np.sort(rng.normal(0, 0.1, 2 ** nbits - 1)).astype(np.float32)
    codec = ResidualCodec(centroids, cutoffs, np.sort(rng.normal(0, 0.1, 2 ** nbits)).astype(np.float32), nbits, dim)
    codes = rng.integers(0, num_c, n).astype(np.int32)
    residual = rng.normal(0, 0.1, (n, dim)).astype(np.float32)
    residual.flat[rng.integers(0, n * dim, 3)] = rng.choice(cutoffs, 3)  # ties with the cutoffs
    x = centroids[codes] + residual
    expected = pack_naive(np.searchsorted(cutoffs, x - centroids[codes], side="left"), nbits)
    got_codes, got = codec.compress(x, codes=codes, chunk=data.draw(st.integers(1, 4)))
    np.testing.assert_array_equal(got_codes, codes)
    np.testing.assert_array_equal(got, expected)
