"""Bi-encoder: exact retrieval, candidate rescoring, cached vectors, and one forward pass shared with ColBERT."""
import json

import numpy as np
import pytest

from cascade import Batch, Candidates, ConfigError, Fusion, Pipeline
from cascade.encoders.sentence import clear_encoders, get_sentence_encoder
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.testing import tiny_sentence_transformer

QUERIES = ["cat on a mat", "barking dogs", "fish in rivers", "singing birds"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "st", max_seq_length=32))


@pytest.fixture
def corpus(tiny_dataset):
    return tiny_dataset.corpus


def _st_vectors(model, texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu")
    return st.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def test_retrieval_is_the_exact_top_k_of_the_corpus(model, corpus, tmp_path):
    stage = BiEncoder(k=4, model=model, cache_dir=tmp_path, progress=False, retrieval_chunk=2)
    out = stage.rerank(Batch(QUERIES, corpus)).candidates
    full = _st_vectors(model, QUERIES) @ _st_vectors(model, corpus.texts).T
    for q in range(len(QUERIES)):
        expected = np.argsort(-full[q], kind="stable")[:4]
        assert list(out.doc_idx[q]) == list(expected)
        np.testing.assert_allclose(out.scores[q], full[q][expected], atol=1e-5)


def test_reranking_scores_only_the_candidates(model, corpus, tmp_path):
    stage = BiEncoder(k=2, model=model, cache_dir=tmp_path, progress=False)
    cands = Candidates.from_lists([[5, 0, 2], [1]], [[3.0, 2.0, 1.0], [1.0]])
    out = stage.rerank(Batch(QUERIES[:2], corpus, cands)).candidates
    vq, vd = _st_vectors(model, QUERIES[:2]), _st_vectors(model, corpus.texts)
    for q, row in enumerate([[5, 0, 2], [1]]):
        scores = vd[row] @ vq[q]
        expected = [row[i] for i in np.argsort(-scores, kind="stable")[:2]]
        assert list(out.doc_idx[q][out.mask[q]]) == expected


def test_vectors_are_cached_as_npy_with_meta_and_memory_mapped(model, corpus, tmp_path, monkeypatch):
    first = BiEncoder(model=model, cache_dir=tmp_path, progress=False)
    first.prepare(corpus)
    (folder,) = (tmp_path / "dense").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [".verified.json", "meta.json", "vectors.npy"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["corpus"] == corpus.fingerprint and meta["num_docs"] == len(corpus) and meta["docs_per_second"] > 0
    assert isinstance(first._vectors, np.memmap) and first._vectors.shape == (len(corpus), 32)

    encoder = get_sentence_encoder(model)
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: pytest.fail("a cached corpus was encoded again"))
    BiEncoder(model=model, cache_dir=tmp_path, progress=False).prepare(corpus)


def test_settings_that_change_vectors_change_the_cache(model, corpus, tmp_path):
    for settings in [{}, {"doc_prefix": "passage: "}, {"doc_max_length": 8}, {"similarity": "dot"}]:
        BiEncoder(model=model, cache_dir=tmp_path, progress=False, **settings).prepare(corpus)
    assert len(list((tmp_path / "dense").iterdir())) == 4


def test_bi_encoder_and_colbert_on_one_model_share_each_forward_pass(model, tiny_dataset, tmp_path):
    clear_encoders()  # no query batch memoized by earlier tests
    encoder = get_sentence_encoder(model)
    forwarded = []
    hook = encoder.model.register_forward_hook(lambda m, args, out: forwarded.append(len(out["input_ids"])))
    try:
        pipe = BM25(k=5) >> BiEncoder(k=4, model=model, cache_dir=tmp_path, progress=False, fusion="zscore") \
            >> ColBERT(k=2, model=model, cache_dir=tmp_path, progress=False)
        run = pipe.run(tiny_dataset)
        assert sum(forwarded) == len(tiny_dataset.corpus) + len(tiny_dataset.query_ids)
        assert run.candidates.lengths.max() == 2
        # control: other document settings for ColBERT make a second pass over the documents;
        # a new run encodes its queries once again (the memo lasts one run, so its cost is real)
        forwarded.clear()
        pipe = BM25(k=5) >> BiEncoder(k=4, model=model, cache_dir=tmp_path / "x", progress=False) \
            >> ColBERT(k=2, model=model, cache_dir=tmp_path / "x", progress=False, doc_max_length=9)
        pipe.run(tiny_dataset)
        assert sum(forwarded) == 2 * len(tiny_dataset.corpus) + len(tiny_dataset.query_ids)
    finally:
        hook.remove()


def test_empty_query_retrieves_nothing(model, corpus, tmp_path):
    out = BiEncoder(k=3, model=model, cache_dir=tmp_path, progress=False).rerank(Batch(["", "cat"], corpus))
    assert list(out.candidates.lengths) == [0, 3]


def test_fusion_from_a_config_mapping(model, corpus, tmp_path):
    from omegaconf import OmegaConf

    stage = BiEncoder(model=model, cache_dir=tmp_path, progress=False,
                      fusion=OmegaConf.create({"method": "minmax", "weight_in": 0.5, "weight_own": 0.5}))
    assert stage.fusion == Fusion("minmax", 0.5, 0.5)


@pytest.mark.parametrize("bad", [{"similarity": "l2"}, {"doc_max_length": 0}, {"batch_size": "big"}])
def test_bad_settings_are_clear_errors(model, bad):
    with pytest.raises(ConfigError):
        BiEncoder(model=model, **bad)


def test_index_seconds_reports_the_shared_build(model, tiny_dataset, tmp_path):
    pipe = Pipeline([BiEncoder(k=3, model=model, cache_dir=tmp_path, progress=False),
                     ColBERT(k=2, model=model, cache_dir=tmp_path, progress=False)])
    seconds = pipe.prepare(tiny_dataset.corpus)
    assert sorted(seconds) == ["biencoder", "colbert"] and all(s >= 0 for s in seconds.values())
    assert pipe.prepare(tiny_dataset.corpus) == {}  # indexed once: a second prepare does nothing
    assert len(list((tmp_path / "colbert").iterdir())) == 1  # built during the bi-encoder's preparation
