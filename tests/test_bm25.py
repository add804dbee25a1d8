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

    monkeypatch.setattr(bm25s.BM25, "index", lambda *a, **k: pytest.fail("index rebuilt"))
    BM25(k=3)(tiny_dataset)
    BM25(k=3, k1=1.2)  # another setting would need another index, built only when used
    assert list(root.iterdir()) == built


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
