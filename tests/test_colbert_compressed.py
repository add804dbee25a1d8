"""The residual-compressed ColBERT index, MaxSim over it, and PLAID retrieval (tiny random model)."""
import logging

import numpy as np
import pytest

from cascade import Batch, Candidates, ConfigError, Corpus, Pipeline
from cascade.kernels.maxsim import maxsim_naive
from cascade.stages.colbert import ColBERT, carried_scores
from cascade.testing import tiny_sentence_transformer

WORDS = "cat dog fish bird river lake mountain tree flower sun moon star rain snow wind fire stone gold".split()
rng = np.random.default_rng(0)
CORPUS = Corpus([f"d{i}" for i in range(120)],
                [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 25)))) for _ in range(120)])
QUERIES = ("cat near the river", "gold stone fire", "snow and wind on the mountain", "")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("m") / "st", max_seq_length=32)


def stage(model, cache, **kw):
    return ColBERT(model=model, cache_dir=cache, progress=False,
                   **{"k": 10, "nbits": 2, "num_centroids": 16, "compute_dtype": "float32", **kw})  # exact: fp32


@pytest.mark.parametrize("bad, message", [({"nbits": 3}, "nbits must be one of 1, 2, 4"),
                                          ({"nbits": None, "search": "plaid"}, "set nbits=2"),
                                          ({"nbits": None, "prune_to": 50}, "set nbits=2"),
                                          ({"search": "fast"}, "plaid or exhaustive"),
                                          ({"compute_dtype": "int4"}, "float32 or bfloat16")])
def test_bad_settings_fail_before_any_work(model, tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message):
        stage(model, tmp_path, **bad)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_compressed_maxsim_equals_decompress_then_naive(model, tmp_path, nbits):
    col = stage(model, tmp_path, nbits=nbits)
    col.prepare(CORPUS)
    index = col._index
    info = col.index_info()
    # + 2: the fp16 norm delta
    assert info["payload_bytes_per_token"] == index.codes.itemsize + index.codec.dim * nbits // 8 + 2
    queries, mask = col.encoder.encode_queries(QUERIES)
    doc_idx = np.array([[0, 5, 17, -1], [3, 3, 119, 60], [-1, -1, -1, -1], [1, 2, 4, 8]])
    full = index.decompress_rows(np.arange(len(index.codes)))
    expected = maxsim_naive(queries, mask, full, index.offsets, doc_idx)
    got = col.exact_scores(queries, mask, doc_idx)
    assert np.allclose(got, expected, atol=1e-4, equal_nan=False)
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))


def test_compression_keeps_rankings_close_to_fp16(model, tmp_path):
    fp16, comp = ColBERT(k=10, model=model, cache_dir=tmp_path, progress=False), stage(model, tmp_path, nbits=4)
    cands = Candidates(np.tile(np.arange(40), (3, 1)), np.zeros((3, 40), np.float32))
    a = fp16.rerank(Batch(QUERIES[:3], CORPUS, cands)).candidates.doc_idx
    b = comp.rerank(Batch(QUERIES[:3], CORPUS, cands)).candidates.doc_idx
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])
    assert overlap >= 0.7, (a, b)


def test_plaid_with_everything_probed_equals_exhaustive(model, tmp_path):
    plaid = stage(model, tmp_path, k=15, ncells=16, centroid_score_threshold=-1e9, ndocs=1000)
    exhaustive = stage(model, tmp_path, k=15, search="exhaustive")
    a = Pipeline([plaid]).run(Batch(QUERIES, CORPUS)).candidates
    b = Pipeline([exhaustive]).run(Batch(QUERIES, CORPUS)).candidates
    assert np.array_equal(a.doc_idx, b.doc_idx)
    assert np.allclose(a.scores[a.mask], b.scores[b.mask], atol=1e-4)
    assert a.lengths[3] == 0  # the empty query finds nothing


def test_plaid_in_bfloat16_finds_what_float32_finds(model, tmp_path, monkeypatch):
    """compute_dtype=bfloat16 runs PLAID's centroid scores in bf16 (a bf16 centroid tensor) and MaxSim in bf16."""
    from cascade.kernels import plaid

    seen = []
    real = plaid.centroid_scores
    monkeypatch.setattr(plaid, "centroid_scores", lambda q, c: seen.append(None if isinstance(c, np.ndarray)
                                                                           else str(c.dtype)) or real(q, c))
    kw = dict(k=15, ncells=16, centroid_score_threshold=-1e9, ndocs=1000)
    a = Pipeline([stage(model, tmp_path, **kw)]).run(Batch(QUERIES, CORPUS)).candidates
    assert seen and all(d is None for d in seen)  # float32: the numpy centroids
    seen.clear()
    b = Pipeline([stage(model, tmp_path, compute_dtype="bfloat16", **kw)]).run(Batch(QUERIES, CORPUS)).candidates
    assert seen and all(str(d) == "torch.bfloat16" for d in seen)
    for q in range(3):
        assert len(set(a.doc_idx[q, :10]) & set(b.doc_idx[q, :10])) >= 8
    assert np.allclose(np.sort(a.scores[:3], axis=1), np.sort(b.scores[:3], axis=1), atol=0.05)


def test_plaid_defaults_retrieve_sorted_rows(model, tmp_path):
    out = Pipeline([stage(model, tmp_path, k=5)]).run(Batch(QUERIES, CORPUS)).candidates
    assert out.doc_idx.shape[1] <= 5 and out.lengths[0] > 0
    for q in range(3):
        row = out.scores[q][out.mask[q]]
        assert (np.diff(row) <= 0).all()


def test_prune_to_keeps_the_best_by_centroid_interaction(model, tmp_path):
    col = stage(model, tmp_path, k=5, prune_to=20)
    cands = Candidates(np.tile(np.arange(100), (3, 1)), np.linspace(1, 0, 100, dtype=np.float32)[None].repeat(3, 0))
    out = col.rerank(Batch(QUERIES[:3], CORPUS, cands)).candidates
    assert out.doc_idx.shape[1] == 5 and set(out.doc_idx.ravel()) <= set(range(100))


def test_carried_scores_follow_their_documents():
    cands = Candidates(np.array([[4, 2, 9, -1], [7, 1, -1, -1]]), np.array([[3., 2., 1., 0.], [5., 4., 0., 0.]]))
    kept = np.array([[9, 4], [1, -1]])
    assert carried_scores(cands, kept).tolist() == [[1.0, 3.0], [4.0, -np.inf]]


def test_other_settings_never_reuse_an_index(model, tmp_path):
    stage(model, tmp_path, nbits=2).prepare(CORPUS)
    stage(model, tmp_path, nbits=4).prepare(CORPUS)
    stage(model, tmp_path, nbits=2, num_centroids=8).prepare(CORPUS)
    assert len([p for p in (tmp_path / "colbert_residual").iterdir() if p.is_dir()]) == 3
    assert not (tmp_path / "colbert").exists()  # streamed from the encoder: no fp16 index written


def test_a_corpus_too_small_for_the_centroids_gets_fewer(model, tmp_path, caplog):
    tiny = Corpus(["a", "b"], ["cat", "dog fish"])
    with caplog.at_level(logging.INFO):
        col = stage(model, tmp_path, num_centroids=4096)
        col.prepare(tiny)
    assert col._index.codec.num_centroids < 4096
    assert "centroids asked for but only" in caplog.text


def test_compressed_index_derives_from_a_cached_fp16_index(model, tmp_path, caplog):
    """With the fp16 index of the same pass cached, compression reads it chunk by chunk: no encoding."""
    ColBERT(k=5, model=model, cache_dir=tmp_path, progress=False, chunk_size=16).prepare(CORPUS)
    caplog.clear()  # only the second prepare's records count, whatever level the logger had for the first
    with caplog.at_level(logging.INFO, logger="cascade"):
        col = stage(model, tmp_path, chunk_size=16)
        col.prepare(CORPUS)
    assert "compressed" in caplog.text and "token vectors from" in caplog.text
    assert "encoded" not in caplog.text and "encoding a sample" not in caplog.text
    assert not list((tmp_path / "colbert_residual").glob("*.partial"))
    queries, mask = col.encoder.encode_queries(QUERIES)
    doc_idx = np.tile(np.arange(30), (len(QUERIES), 1))
    full = col._index.decompress_rows(np.arange(len(col._index.codes)))
    assert np.allclose(col.exact_scores(queries, mask, doc_idx),
                       maxsim_naive(queries, mask, full, col._index.offsets, doc_idx), atol=1e-4)
