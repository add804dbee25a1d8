import math

import numpy as np
import pytest
import rank_bm25

from cascade import Batch, Candidates, ConfigError
from cascade.index.store import resolve_cache_dir
from cascade.stages.bm25 import BM25, Tokenizer


@pytest.mark.parametrize("variant, cls", [("okapi", rank_bm25.BM25Okapi), ("bm25l", rank_bm25.BM25L),
                                          ("bm25plus", rank_bm25.BM25Plus)])
def test_rank_bm25_backend_scores_equal_the_library(tiny_dataset, variant, cls):
    corpus = tiny_dataset.corpus
    tok = Tokenizer()
    extra = {"epsilon": 0.25} if variant == "okapi" else {"delta": 0.5}
    reference = cls(tok(corpus.texts), k1=1.2, b=0.7, **extra)
    stage = BM25(k=None, backend="rank_bm25", variant=variant, k1=1.2, b=0.7)
    everything = Candidates(np.tile(np.arange(len(corpus)), (len(tiny_dataset.query_texts), 1)),
                            np.zeros((len(tiny_dataset.query_texts), len(corpus))))
    out = stage.rerank(Batch(tiny_dataset.query_texts, corpus, everything)).candidates
    for q, text in enumerate(tiny_dataset.query_texts):
        expected = reference.get_scores(tok([text])[0])
        np.testing.assert_allclose(out.scores[q], expected[out.doc_idx[q]], rtol=1e-5)


def test_both_backends_rank_alike(tiny_dataset):
    a = BM25(k=3)(tiny_dataset)
    b = BM25(k=3, backend="rank_bm25", epsilon=1.0)(tiny_dataset)
    assert a.candidates.doc_idx[:, 0].tolist() == b.candidates.doc_idx[:, 0].tolist()


def test_retrieval_keeps_only_matching_documents(tiny_dataset):
    run = BM25(k=100)(tiny_dataset)
    texts = [t.lower() for t in tiny_dataset.corpus.texts]
    # "fish in rivers": only d5 mentions fish or rivers
    row = run.candidates.doc_idx[2][run.candidates.mask[2]]
    assert [tiny_dataset.corpus.ids[i] for i in row] == ["d5"] and "fish" in texts[row[0]]


def test_index_is_saved_and_reused(tiny_dataset, monkeypatch):
    BM25(k=3)(tiny_dataset)
    root = resolve_cache_dir(None) / "bm25s"
    built = list(root.iterdir())
    assert len(built) == 1 and (built[0] / "meta.json").is_file()
    assert not any(p.name.endswith(".pkl") for p in built[0].iterdir())
    import bm25s

    index = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index", lambda *a, **k: pytest.fail("index rebuilt"))
    BM25(k=3)(tiny_dataset)
    other = BM25(k=3, k1=1.2)  # another setting needs another index, built only when used
    assert list(root.iterdir()) == built
    monkeypatch.setattr(bm25s.BM25, "index", index)
    other(tiny_dataset)
    assert len(list(root.iterdir())) == 2


def _naive_bm25(query: list[str], docs: list[list[str]], k1: float, b: float, method: str) -> np.ndarray:
    """BM25 written out: Lucene's idf log(1 + (N - df + .5) / (df + .5)) without the (k1 + 1)
    factor, or ATIRE's idf log(N / df) with it."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    out = np.zeros(n)
    for term in set(query):
        df = sum(term in d for d in docs)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5)) if method == "lucene" else math.log(n / df)
        for i, d in enumerate(docs):
            tf = d.count(term)
            norm = tf + k1 * (1 - b + b * len(d) / avgdl)
            out[i] += idf * tf / norm * (1 if method == "lucene" else k1 + 1)
    return out


@pytest.mark.parametrize("method", ["lucene", "atire"])
@pytest.mark.parametrize("k1, b", [(0.9, 0.4), (2.5, 1.0), (1.2, 0.0)])
def test_bm25s_scores_equal_the_formula_at_any_k1_and_b(tiny_dataset, k1, b, method):
    corpus, queries = tiny_dataset.corpus, list(tiny_dataset.query_texts) + ["cat dogs fish birds mat"]
    docs = Tokenizer()(corpus.texts)
    everything = Candidates(np.tile(np.arange(len(corpus)), (len(queries), 1)), np.zeros((len(queries), len(corpus))))
    out = BM25(k=None, k1=k1, b=b, method=method).rerank(Batch(queries, corpus, everything)).candidates
    for q, tokens in enumerate(Tokenizer()(queries)):
        want = _naive_bm25(tokens, docs, k1, b, method)
        np.testing.assert_allclose(out.scores[q], want[out.doc_idx[q]], rtol=1e-5, atol=1e-6)
    retrieved = BM25(k=3, k1=k1, b=b, method=method)(tiny_dataset).candidates
    for q, tokens in enumerate(Tokenizer()(tiny_dataset.query_texts)):
        want = _naive_bm25(tokens, docs, k1, b, method)
        hits = [d for d in np.argsort(-want, kind="stable") if want[d] > 0][:3]
        assert retrieved.doc_idx[q][retrieved.mask[q]].tolist() == hits


def test_stemming_and_stopwords_configurable():
    assert Tokenizer()(["The cats are running"]) == [["cat", "run"]]
    assert Tokenizer(stemmer=None, stopwords=None)(["The cats"]) == [["the", "cats"]]
    with pytest.raises(ConfigError, match="unknown stemmer"):
        Tokenizer(stemmer="klingon")


def test_bad_backend_rejected():
    with pytest.raises(ConfigError, match="bm25s, rank_bm25"):
        BM25(backend="lucene")
    with pytest.raises(ConfigError, match="variant"):
        BM25(backend="rank_bm25", variant="okapii")


def test_defaults_name_and_messages():
    stage = BM25()
    assert (stage.k, stage.backend, stage.k1, stage.b, stage.method, stage.variant, stage.delta, stage.epsilon) == \
        (1000, "bm25s", 1.5, 0.75, "lucene", "okapi", 0.5, 0.25)
    assert stage.name == "bm25" and BM25(name="first").name == "first"
    with pytest.raises(ConfigError, match=r"^unknown rank_bm25 variant 'x'; use one of okapi, bm25l, bm25plus$"):
        BM25(variant="x")
    with pytest.raises(ConfigError, match=r"^unknown BM25 backend 'x'; use one of bm25s, rank_bm25$"):
        BM25(backend="x")


@pytest.mark.parametrize("backend, kind", [("bm25s", "bm25s"), ("rank_bm25", "tokens")])
def test_each_analysis_setting_has_its_own_index_and_its_size_is_reported(tiny_dataset, tmp_path, backend, kind):
    paths = set()
    for settings in ({}, {"stemmer": None}, {"stopwords": None}, {"stopwords": ["cat"]}):
        stage = BM25(k=3, backend=backend, cache_dir=tmp_path, **settings)
        stage(tiny_dataset)
        assert stage.index_info()["index_bytes"] > 0
        paths.add(stage._path)
    assert len(paths) == 4 and {p.parent.name for p in paths} == {kind}


def test_a_run_prints_nothing(tiny_dataset, capfd):
    BM25(k=3)(tiny_dataset)
    BM25(k=3, backend="rank_bm25")(tiny_dataset)
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""


def test_index_info_is_empty_before_indexing_and_sized_after(tiny_dataset):
    stage = BM25(k=3)
    assert stage.index_info() == {}
    stage.prepare(tiny_dataset.corpus)
    assert stage.index_info()["index_bytes"] > 0


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_runs_report_encode_and_score_phases(tiny_dataset, backend):
    run = (BM25(k=3, backend=backend) >> BM25(k=2, backend=backend))(tiny_dataset)
    for trace in run.stages:
        assert set(trace.phases) == {"encode", "score"}, trace.phases


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_k_none_retrieves_every_matching_document(tiny_dataset, backend):
    run = BM25(k=None, backend=backend)(tiny_dataset)
    tok = Tokenizer()
    docs = tok(tiny_dataset.corpus.texts)
    for q, text in enumerate(tiny_dataset.query_texts):
        terms = set(tok([text])[0])
        matching = {i for i, d in enumerate(docs) if terms & set(d)}
        assert set(run.candidates.doc_idx[q][run.candidates.mask[q]].tolist()) == matching


@pytest.mark.parametrize("backend, variant", [("bm25s", "okapi"), ("rank_bm25", "okapi"), ("rank_bm25", "bm25plus")])
def test_rerank_of_texts_scores_like_an_index_of_those_texts(backend, variant):
    from cascade import Corpus

    docs = ["Dogs bark at night and dogs run.", "Cats purr on the mat.", "A dog is a loyal pet.",
            "Fish swim in rivers.", "Birds sing at dawn."]
    stage = BM25(k=None, backend=backend, variant=variant, epsilon=0.5, delta=0.7)
    ranking = stage.rerank("barking dogs", docs)
    indexed = BM25(k=None, backend=backend, variant=variant, epsilon=0.5, delta=0.7)
    corpus = Corpus([str(i) for i in range(len(docs))], docs)
    everything = Candidates(np.arange(len(docs))[None, :], np.zeros((1, len(docs))))
    ref = indexed.rerank(Batch(("barking dogs",), corpus, everything)).candidates
    expected = dict(zip(ref.doc_idx[0].tolist(), ref.scores[0].tolist()))
    got = dict(zip(ranking.indices, ranking.scores))
    assert set(got) == set(expected) and ranking.indices[0] == 0 and max(got.values()) > 0
    for i, score in got.items():
        assert score == pytest.approx(expected[i], rel=1e-5)
