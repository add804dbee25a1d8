"""The compressed index's build: assignment settings in the cache keys, float16 centroids used
consistently, the sample's memory cap, progress bars (tiny random model)."""
import json
import logging

import numpy as np
import pytest
from test_colbert_compressed import CORPUS, model, stage  # noqa: F401 (the model fixture)
from test_kernels_residual import pack_naive

from cascade import ConfigError
from cascade.index import residual_index
from cascade.kernels.assign import assign_exact
from cascade.stages.colbert import ColBERT


def built(col):
    col.prepare(CORPUS)
    return col.artifacts(CORPUS)[0], col._index


def test_bad_assignment_fails_before_any_work(model, tmp_path):
    with pytest.raises(ConfigError, match="assignment must be one of auto, exact, coarse"):
        stage(model, tmp_path, assignment="fast")
    assert not any(tmp_path.iterdir())


def test_assignment_settings_never_reuse_an_index_or_its_kmeans(model, tmp_path):
    used = {}
    for mode in ("exact", "coarse", "auto"):
        art, index = built(stage(model, tmp_path, assignment=mode))
        used[mode] = index.meta["assignment_used"]
        assert index.meta["assignment"] == mode
    assert used == {"exact": "exact", "coarse": "coarse", "auto": "exact"}  # 16 centroids: auto is exact
    assert len([p for p in (tmp_path / "colbert_residual").iterdir() if p.is_dir()]) == 3
    kmeans = [p for p in (tmp_path / "colbert_centroids").iterdir() if p.is_dir()]
    assert len(kmeans) == 3
    metas = [json.loads((p / "meta.json").read_text()) for p in kmeans]
    assert sorted(m["assignment"] for m in metas) == ["auto", "coarse", "exact"]
    assert {m["two_level"] for m in metas} == {True, False} and all(m["centroids_format"] == 2 for m in metas)


@pytest.mark.parametrize("mode", ["exact", "coarse"])
def test_stored_index_is_computed_against_its_stored_float16_centroids(model, tmp_path, mode):
    """Codes, residual bytes and norm deltas of a derived build, recomputed naively from the fp16 token
    vectors and the float16 centroids the index stores (the ones decoding uses), are what was stored."""
    source = ColBERT(k=5, model=model, cache_dir=tmp_path, progress=False, chunk_size=16)
    source.prepare(CORPUS)
    art, index = built(stage(model, tmp_path, chunk_size=16, assignment=mode))
    stored = np.load(art.path / "centroids.npy")
    assert stored.dtype == np.float16
    kmeans = np.load(art.centroids_dir(CORPUS, index.codec.num_centroids) / "centroids.npy")
    assert kmeans.dtype == np.float16
    centroids = stored.astype(np.float32)
    np.testing.assert_array_equal(index.codec.centroids, centroids)
    x = np.asarray(source._index.tokens, np.float32)
    codes = np.asarray(index.codes, np.int64)
    if mode == "exact":
        np.testing.assert_array_equal(codes, assign_exact(x, centroids))
    else:
        np.testing.assert_array_equal(codes, index.codec.with_assignment("coarse").assign(x))
        sims = np.einsum("ij,ij->i", x, centroids[codes])
        assert np.all(sims <= (x @ centroids.T).max(axis=1) + 1e-6)
    buckets = np.searchsorted(index.codec.bucket_cutoffs, x - centroids[codes], side="left")
    np.testing.assert_array_equal(np.asarray(index.residuals), pack_naive(buckets, 2))
    y = centroids[codes] + index.codec.bucket_weights[buckets]
    deltas = 1 / np.linalg.norm(y, axis=1) - 1
    np.testing.assert_allclose(np.asarray(index.norm_deltas, np.float32), deltas, atol=1e-3)


def test_the_codec_sample_is_float16_and_capped(model, tmp_path, monkeypatch, caplog):
    cap_tokens = 100
    monkeypatch.setattr(residual_index, "SAMPLE_MAX_BYTES", cap_tokens * 2 * 32)  # the tiny model's dim: 32
    seen = []
    real = residual_index.train_codec
    monkeypatch.setattr(residual_index, "train_codec", lambda sample, *a, **kw: seen.append(sample) or real(
        sample, *a, **kw))
    with caplog.at_level(logging.INFO):
        _, index = built(stage(model, tmp_path))
    assert index.codec.dim == 32
    assert seen[0].dtype == np.float16 and len(seen[0]) == cap_tokens
    assert f"codec sample capped at {cap_tokens} token vectors" in caplog.text


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bars_for_kmeans_and_compression(model, tmp_path, capsys, progress):
    ColBERT(model=model, cache_dir=tmp_path, progress=progress, k=5, nbits=2, num_centroids=16,
            assignment="coarse").prepare(CORPUS)
    err = capsys.readouterr().err
    for bar in ("encoding the codec's sample", "k-means level 1", "k-means level 2", "assign + compress"):
        assert (bar in err) == progress, (bar, err[-500:])


def test_build_phases_are_recorded(model, tmp_path):
    _, index = built(stage(model, tmp_path))
    phases = index.meta["build_phases"]
    assert {"sample", "kmeans", "buckets", "assign", "compress", "save", "assemble", "ivf"} <= set(phases)
    assert all(p["cpu_s"] >= 0 and p["wall_s"] >= 0 and p["peak_rss_mib"] > 0 for p in phases.values())
