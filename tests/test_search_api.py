"""search() over a bound corpus and rerank(query, docs) over plain texts: exact results on tiny corpora,
no cache folder for a list of texts, and the same scores as the cached path."""
import os
from pathlib import Path

import numpy as np
import pytest

from cascade import Batch, Candidates, ConfigError, Corpus, DataError, Ranking
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.stages.cross_encoder import CrossEncoder
from cascade.testing import tiny_cross_encoder, tiny_sentence_transformer

DOCS = ["The cat sat on the mat.", "Dogs bark loudly at night.", "A cat and a kitten play.", "Birds sing.",
        "Fish swim in cold rivers."]


def _cache_files() -> list[str]:
    root = Path(os.environ["CASCADE_CACHE_DIR"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _cached_scores(stage, query: str, docs: list[str]) -> dict[int, float]:
    """Scores of ``docs`` through the corpus path: indexed (cached), then the Batch interface."""
    corpus = Corpus([f"d{i}" for i in range(len(docs))], docs)
    cands = Candidates(np.arange(len(docs))[None, :], np.zeros((1, len(docs)), np.float32))
    out = (stage % len(docs)).rerank(Batch([query], corpus, cands)).candidates
    return {int(d): float(s) for d, s in zip(out.doc_idx[0], out.scores[0])}


def test_search_a_bound_corpus():
    pipe = BM25(k=10).index({"a": DOCS[0], "b": DOCS[1], "c": DOCS[2], "d": DOCS[3]})
    hits = pipe.search("cat on a mat", k=10)
    assert isinstance(hits, Ranking) and hits.query == "cat on a mat"
    assert hits.doc_ids == ["a", "c"]  # only documents sharing a term; mat and cat beat cat alone
    assert hits.texts == [DOCS[0], DOCS[2]] and hits.indices == [0, 2] and [h.rank for h in hits] == [1, 2]
    assert hits.scores[0] > hits.scores[1] > 0
    assert pipe.search("cat on a mat", k=1).doc_ids == ["a"]
    many = pipe.search(["barking dogs", "singing birds", "cat"], k=3)
    assert [r.doc_ids for r in many] == [["b"], ["d"], ["a", "c"]]  # a and c tie on 'cat': corpus order
    assert many[2].scores[0] == many[2].scores[1]
    assert [r.query for r in many] == ["barking dogs", "singing birds", "cat"]
    frame = hits.to_pandas()
    assert list(frame.columns) == ["query", "rank", "doc_id", "score", "text", "index"]
    assert frame["doc_id"].tolist() == ["a", "c"] and hits.to_list()[0]["text"] == DOCS[0]


def test_search_scores_equal_the_batch_interface(tiny_dataset):
    stage = BM25(k=4)
    got = stage.search(list(tiny_dataset.query_texts), k=4, corpus=tiny_dataset.corpus)
    want = stage.rerank(Batch(tiny_dataset.query_texts, tiny_dataset.corpus)).candidates
    for ranking, idx, sc in zip(got, want.doc_idx, want.scores):
        assert ranking.indices == [int(i) for i in idx if i >= 0]
        assert ranking.scores == [float(s) for s, i in zip(sc, idx) if i >= 0]
        assert ranking.doc_ids == [tiny_dataset.corpus.ids[i] for i in ranking.indices]


def test_search_a_pipeline_builds_the_cache_once(tiny_dataset):
    pipe = BM25(k=5) >> BiEncoder(k=2, progress=False)
    assert _cache_files() == []
    first = pipe.search("cat on a mat", corpus=tiny_dataset)
    files = _cache_files()
    assert any(f.startswith("dense/") for f in files) and any(f.startswith("bm25s/") for f in files)
    assert len(first) == 2 and first.doc_ids[0] in {"d1", "d3"}
    assert pipe.search("cat on a mat").hits == first.hits and _cache_files() == files


def test_search_needs_a_corpus_and_checks_its_input():
    with pytest.raises(ConfigError, match=r"call \.index\(corpus\) first"):
        BM25().search("cat")
    stage = BM25().index(DOCS)
    with pytest.raises(DataError, match="string or a list of strings"):
        stage.search(42)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        stage.search("cat", k=0)
    assert stage.search([]) == []


def test_rerank_texts_with_bm25_uses_the_given_documents_only():
    stage = BM25(k=None)
    ranking = stage.rerank("cat on a mat", DOCS)
    assert ranking.indices[:2] == [0, 2] and ranking.doc_ids[:2] == ["0", "2"] and ranking.texts[0] == DOCS[0]
    assert sorted(ranking.indices) == list(range(len(DOCS))), "every given document comes back, ranked"
    assert ranking.scores == pytest.approx([_cached_scores(stage, "cat on a mat", DOCS)[i] for i in ranking.indices])
    # the term statistics are those of the given list: BM25 indexed on exactly those two texts
    two = stage.rerank("cat", [DOCS[0], DOCS[1]])
    assert two.scores == pytest.approx([_cached_scores(stage, "cat", DOCS[:2])[i] for i in two.indices])
    assert two.scores[0] != pytest.approx(stage.rerank("cat", DOCS).scores[0])
    assert stage.rerank("cat", {"x": DOCS[1], "y": DOCS[2]}).doc_ids == ["y", "x"]
    assert stage.rerank("cat", DOCS, k=1).indices == [0]  # ties by position: doc 0 and 2 both hold 'cat' once


@pytest.fixture(scope="module")
def unnormalized(tmp_path_factory) -> str:
    """A tiny model whose embeddings are not unit length (so cosine similarity must normalize them)."""
    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "st", normalize=False))


STAGES = {"biencoder": lambda model: BiEncoder(k=None, progress=False),
          "biencoder-unnormalized": lambda model: BiEncoder(k=None, model=model, progress=False),
          "colbert": lambda model: ColBERT(k=None, progress=False)}


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_rerank_texts_encodes_on_the_fly_without_a_cache_folder(kind, unnormalized):
    make = lambda: STAGES[kind](unnormalized)  # noqa: E731
    stage = make()
    before = _cache_files()
    ranking = stage.rerank("cat on a mat", DOCS)
    assert _cache_files() == before, "reranking a list of texts wrote to the cache"
    assert sorted(ranking.indices) == list(range(len(DOCS)))
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    cached = _cached_scores(make(), "cat on a mat", DOCS)
    assert _cache_files() != before, "the corpus path caches (this test's reference is that path)"
    np.testing.assert_allclose(ranking.scores, [cached[i] for i in ranking.indices], rtol=1e-5, atol=1e-6)
    many = stage.rerank(["barking dogs", "cold fish"], [DOCS, DOCS[2:]])
    assert [r.texts for r in many] == [stage.rerank("barking dogs", DOCS).texts,
                                       stage.rerank("cold fish", DOCS[2:]).texts]
    if kind != "biencoder-unnormalized":  # MiniLM ranks the obvious match first
        assert many[0].indices[0] == 1 and many[1].texts[0] == DOCS[4] and many[1].indices[0] == 2


def test_cross_encoder_reranks_texts_directly(tmp_path):
    stage = CrossEncoder(k=3, model=str(tiny_cross_encoder(tmp_path / "ce")))
    ranking = stage.rerank("cat on a mat", DOCS)
    cached = _cached_scores(stage, "cat on a mat", DOCS)
    top = sorted(cached, key=lambda d: (-cached[d], d))[:3]
    assert ranking.indices == top and len(ranking) == 3
    np.testing.assert_allclose(ranking.scores, [cached[i] for i in top], rtol=1e-5, atol=1e-5)


def test_a_pipeline_reranks_texts_stage_by_stage(tiny_dataset):
    texts = list(tiny_dataset.corpus.texts)
    pipe = BM25(k=4) >> BiEncoder(k=2, progress=False, fusion="zscore")
    got = pipe.rerank(list(tiny_dataset.query_texts), [texts] * 4)
    cands = Candidates(np.tile(np.arange(len(texts)), (4, 1)), np.zeros((4, len(texts)), np.float32))
    # the corpus path: BM25 first reranks all (its statistics are the corpus's, equal to the list's here)
    want = pipe.rerank(Batch(tiny_dataset.query_texts, tiny_dataset.corpus, cands)).candidates
    assert [r.indices for r in got] == [[int(i) for i in row if i >= 0] for row in want.doc_idx]
    np.testing.assert_allclose([r.scores for r in got], want.scores, rtol=1e-5, atol=1e-6)


def test_rerank_dispatches_on_its_argument(tiny_dataset):
    stage = BM25(k=2)
    batch = Batch(tiny_dataset.query_texts, tiny_dataset.corpus)
    assert isinstance(stage.rerank(batch), Batch)
    with pytest.raises(TypeError, match="takes only a Batch"):
        stage.rerank(batch, DOCS)
    with pytest.raises(DataError, match="list of strings"):
        stage.rerank("cat", None)
    with pytest.raises(DataError, match="2 queries but 1 document lists"):
        stage.rerank(["cat", "dog"], [DOCS])
    with pytest.raises(DataError, match="item 1 is a int"):
        stage.rerank("cat", ["a", 3])
    assert len(stage.rerank("cat", [])) == 0


# --- rerank(query, docs) is an ordinary run over the list as a corpus of its own ---------------------------------

def _indexed_scores(stage, query: str, docs) -> tuple[list[int], list[float]]:
    """The ranking of ``docs`` by ``stage`` run on them as an indexed corpus (ids as rerank gives them), every
    document a candidate with no scores yet: what ``rerank(query, docs)`` must equal exactly."""
    corpus = Corpus([str(i) for i in range(len(docs))], docs)
    cands = Candidates(np.arange(len(docs))[None, :], np.zeros((1, len(docs)), np.float32))
    out = stage.rerank(Batch([query], corpus, cands)).candidates
    keep = out.doc_idx[0] >= 0
    return out.doc_idx[0][keep].tolist(), out.scores[0][keep].tolist()


@pytest.fixture(scope="module")
def st_model(tmp_path_factory) -> str:
    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "st-equal"))


EQUAL = {"bm25s": lambda m: BM25(k=None), "rank_bm25": lambda m: BM25(k=None, backend="rank_bm25"),
         "biencoder": lambda m: BiEncoder(k=None, model=m, progress=False),
         "colbert": lambda m: ColBERT(k=None, model=m, progress=False),
         "colbert-2bit": lambda m: ColBERT(k=None, model=m, nbits=2, num_centroids=8, progress=False),
         "pipeline": lambda m: BM25(k=4) >> BiEncoder(k=3, model=m, progress=False, fusion="zscore"),
         "union": lambda m: BM25(k=3) + ColBERT(k=3, model=m, progress=False)}


@pytest.mark.parametrize("kind", sorted(EQUAL))
def test_rerank_texts_equals_the_stage_over_the_texts_as_an_indexed_corpus(kind, st_model):
    ranking = EQUAL[kind](st_model).rerank("a cat on the mat", DOCS)
    indices, scores = _indexed_scores(EQUAL[kind](st_model), "a cat on the mat", DOCS)
    assert ranking.indices == indices and ranking.scores == scores  # exactly: the same run
    assert ranking.doc_ids == [str(i) for i in indices] and ranking.texts == [DOCS[i] for i in indices]


def test_the_stages_that_see_the_given_documents_first_rank_by_their_own_scores(st_model):
    """The given documents carry no scores yet: a first stage's fusion (or a union side's) is not applied to
    their zero start scores, as the corpus path's first stage ranks by its own; later stages fuse."""
    plain = BM25(k=None).rerank("cat on a mat", DOCS)
    assert BM25(k=None, fusion="zscore").rerank("cat on a mat", DOCS).scores == plain.scores
    assert BM25(k=None, fusion="rrf").rerank("cat on a mat", DOCS).scores == plain.scores
    fused = BM25(k=3, fusion="minmax") >> BiEncoder(k=2, model=st_model, progress=False, fusion="zscore")
    want = BM25(k=3) >> BiEncoder(k=2, model=st_model, progress=False, fusion="zscore")
    assert fused.rerank("cat on a mat", DOCS).scores == want.rerank("cat on a mat", DOCS).scores
    sides = (BM25(k=3, fusion="zscore") + BiEncoder(k=3, model=st_model, progress=False, fusion="minmax"))
    plain_sides = BM25(k=3) + BiEncoder(k=3, model=st_model, progress=False)
    assert sides.rerank("cat on a mat", DOCS).to_list() == plain_sides.rerank("cat on a mat", DOCS).to_list()
    unfused = BM25(k=3) >> BiEncoder(k=2, model=st_model, progress=False)
    assert unfused.rerank("cat on a mat", DOCS).scores != want.rerank("cat on a mat", DOCS).scores  # later ones fuse


def test_rerank_texts_leaves_the_stage_bound_to_its_corpus(tiny_dataset, st_model):
    pipe = BM25(k=5) >> BiEncoder(k=3, model=st_model, progress=False)
    pipe.index(tiny_dataset)
    before = pipe.search("cat on a mat")
    bm25, dense = pipe.leaves()
    opened = (bm25._model, dense._vectors, bm25._prepared_for, dense._prepared_for)
    files = _cache_files()
    ranking = pipe.rerank("cat on a mat", DOCS)
    assert len(ranking) == 3 and _cache_files() == files
    assert (bm25._model, dense._vectors, bm25._prepared_for, dense._prepared_for) == opened  # the same objects
    assert pipe._search_corpus is tiny_dataset.corpus and pipe.search("cat on a mat") == before
    assert dense.fusion is None and bm25.k == 5 and pipe.stages == [bm25, dense]


def test_rerank_texts_builds_in_a_private_folder_removed_afterwards(tmp_path):
    """Artifacts go to a scratch folder while the call runs, whatever cache_dir the stage names; it is gone after."""
    from cascade import apply
    from cascade.core.scratch import scratch_dir

    seen = []

    def look(batch):
        seen.append((scratch_dir(), sorted(p.name for p in scratch_dir().iterdir())))
        return batch.candidates.scores

    own = tmp_path / "own-cache"
    pipe = BM25(k=None, cache_dir=str(own)) >> apply(look)
    assert pipe.rerank("cat", DOCS).indices[:2] == [0, 2]
    ((folder, names),) = seen
    assert "bm25s" in names and not folder.exists() and scratch_dir() is None
    assert not own.exists() and _cache_files() == []


def test_concurrent_text_reranks_of_one_stage_equal_lone_calls(st_model):
    from concurrent.futures import ThreadPoolExecutor

    pipe = BM25(k=4) >> ColBERT(k=3, model=st_model, progress=False)
    before = pipe.index(DOCS).search("cat")
    lists = [DOCS[i:] + DOCS[:i] for i in range(len(DOCS))] * 3
    alone = [pipe.rerank("a cat on the mat", docs).to_list() for docs in lists]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda docs: pipe.rerank("a cat on the mat", docs).to_list(), lists))
    assert together == alone
    assert pipe.search("cat") == before  # still bound to its own corpus


def test_copies_share_the_loaded_models(tmp_path, monkeypatch):
    import cascade.stages.cross_encoder as ce

    loads = []
    real = ce.load_model
    monkeypatch.setattr(ce, "load_model", lambda *a, **kw: loads.append(a[0]) or real(*a, **kw))
    stage = CrossEncoder(k=2, model=str(tiny_cross_encoder(tmp_path / "ce")))
    for _ in range(3):
        stage.rerank("cat on a mat", DOCS)
    (stage % 1).rerank("cat", DOCS)
    assert len(loads) == 1


def test_queries_given_the_same_list_share_one_run_and_lists_may_be_empty():
    stage = BM25(k=2)
    many = stage.rerank(["cat", "dogs", "fish"], [DOCS, [], DOCS])
    assert many[0].indices == stage.rerank("cat", DOCS).indices and len(many[1]) == 0
    assert many[2].indices[0] == 4 and many[2].scores[1] == 0  # every given document is a candidate
    with pytest.raises(DataError, match="every one of the 2 documents given for query 'cat' is empty"):
        stage.rerank("cat", ["", " "])
    assert stage.rerank("cat", ["the", "a"]).scores == [0.0, 0.0]  # no terms at all (stopwords): nothing matches
