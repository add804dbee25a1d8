"""Saved indexes: save, load, add, delete, update, compact give exactly the rankings of fresh builds."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cascade
from cascade.core.errors import DataError
from cascade.testing import tiny_sentence_transformer

from saved_helpers import QUERIES, assert_same, make_docs, pipelines, snapshot

ALL = make_docs(70)
IDS = list(ALL)
PART1, PART2, PART3 = (dict(list(ALL.items())[a:b]) for a, b in ((0, 40), (40, 55), (55, 70)))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("model") / "st"))


def _fresh(model: str, name: str, docs: dict, path):
    return pipelines(model)[name].index(docs).save(path)


@pytest.mark.parametrize("name", ["bm25", "dense", "colbert", "cascade"])
def test_built_at_once_equals_built_by_adds(model, tmp_path, name):
    whole = _fresh(model, name, ALL, tmp_path / "whole")
    grown = _fresh(model, name, PART1, tmp_path / "grown")
    grown.add(PART2).add(PART3)
    assert grown.generation == 2 and len(grown) == len(ALL)
    assert_same(snapshot(grown), snapshot(whole), exact=name == "bm25")
    again = cascade.load(tmp_path / "grown")  # the folder alone gives the same
    assert_same(snapshot(again), snapshot(whole), exact=name == "bm25")


@pytest.mark.parametrize("name", ["bm25", "dense", "colbert", "cascade"])
def test_deleting_gives_an_index_built_without_them(model, tmp_path, name):
    gone = ["d1", "d7", "d20", "d41", "d69"]
    kept = {d: t for d, t in ALL.items() if d not in gone}
    fresh = _fresh(model, name, kept, tmp_path / "fresh")
    index = _fresh(model, name, ALL, tmp_path / "index")
    index.delete(gone)
    assert len(index) == len(kept) and all(d not in index for d in gone)
    assert_same(snapshot(index), snapshot(fresh), exact=name == "bm25")
    assert_same(snapshot(cascade.load(tmp_path / "index")), snapshot(fresh), exact=name == "bm25")
    index.compact()
    assert index.manifest["rows"] == len(kept)
    assert_same(snapshot(index), snapshot(fresh), exact=name == "bm25")


def test_bm25_scores_equal_a_fresh_build_after_every_change(model, tmp_path):
    index = _fresh(model, "bm25", PART1, tmp_path / "index")
    index.add(PART2)
    index.delete(["d2", "d44"])
    changed = {"d5": "cat cat river river mountain", "d50": "bread milk"}
    index.update(changed)
    live_rows = np.flatnonzero(index.corpus.live)
    live_ids = [index.corpus.ids[r] for r in live_rows]  # the live documents in row order (updates last)
    merged = {**PART1, **PART2, **changed}
    assert sorted(live_ids) == sorted(d for d in merged if d not in ("d2", "d44"))
    fresh = pipelines(model)["bm25"].index({d: merged[d] for d in live_ids})
    for query in QUERIES:
        tokens = fresh.tokenizer([query])[0]
        if tokens:
            np.testing.assert_array_equal(index.stages[0]._full_scores(tokens)[live_rows], fresh._full_scores(tokens))
    assert_same(snapshot(index), snapshot(fresh), exact=True)


def test_update_replaces_documents_and_keeps_their_ids(model, tmp_path):
    index = _fresh(model, "cascade", ALL, tmp_path / "index")
    index.update({"d10": "ship on the sea ship sea", "d11": {"title": "Bread", "text": "milk and bread",
                                                             "metadata": {"lang": "en"}}})
    assert index.doc("d10")["text"] == "ship on the sea ship sea"
    assert index.doc("d11") == {"id": "d11", "text": "Bread milk and bread", "metadata": {"lang": "en"}}
    assert index.search("ship on the sea", k=1).doc_ids == ["d10"]
    assert len(index) == len(ALL) and index.corpus.ids.count("d10") == 2  # the old row stays until compacted
    index.compact()
    assert index.corpus.ids.count("d10") == 1 and index.search("ship on the sea", k=1).doc_ids == ["d10"]


@pytest.mark.parametrize("name", ["bm25", "dense", "colbert", "cascade"])
def test_filtered_search_restricts_every_stage(model, tmp_path, name):
    allowed = [d for i, d in enumerate(IDS) if i % 3 == 0]
    meta = {d: {"group": "a" if d in allowed else "b", "n": i} for i, d in enumerate(IDS)}
    index = pipelines(model)[name].index(ALL).save(tmp_path / "index", metadata=meta)
    by_subset = snapshot(index, subset=allowed)
    assert by_subset == snapshot(index, where={"group": "a"})
    assert all(d in allowed for ids, _ in by_subset for d in ids)
    if name in ("dense", "colbert"):  # scores do not depend on other documents: an index of the allowed ones
        only = _fresh(model, name, {d: ALL[d] for d in allowed}, tmp_path / "only")
        assert_same(by_subset, snapshot(only))
        assert all(len(ids) == 10 for ids, _ in by_subset)  # k hits: the first stage is masked before its top k
    elif name == "bm25":  # BM25 keeps the index's statistics (as a Lucene filter): the full ranking, restricted
        index.stages[0].k = None
        full = snapshot(index, k=None)
        index.stages[0].k = 15
        assert by_subset == [([d for d in ids if d in allowed][:10], [s for d, s in zip(ids, sc) if d in allowed][:10])
                             for ids, sc in full]
    if name in ("dense", "colbert"):  # a small subset (the bi-encoder reads only its vectors): all of it
        few = allowed[:5]
        assert all(set(ids) == set(few) for ids, _ in snapshot(index, k=5, subset=few))
    assert snapshot(index, where={"group": ["a", "b"]}) == snapshot(index)
    assert snapshot(index, where={"group": "c"}) == [([], [])] * len(QUERIES)
    two = snapshot(index, subset=allowed, where={"n": [0, 3, 4]})
    assert all(set(ids) <= {"d0", "d3"} for ids, _ in two)


def test_filters_and_deletions_combine(model, tmp_path):
    index = _fresh(model, "dense", ALL, tmp_path / "index")
    index.delete(["d0", "d3"])
    hits = snapshot(index, subset=["d6", "d9", "d12"], where={"never": "set"})
    assert hits == [([], [])] * len(QUERIES)
    hits = snapshot(index, subset=["d6", "d9", "d12"])
    assert all(sorted(ids) == ["d12", "d6", "d9"] for ids, _ in hits)
    with pytest.raises(DataError, match="not in the corpus"):
        index.search("cat", subset=["d0"])  # a deleted document is not in the index
    with pytest.raises(DataError, match="not in the corpus.*nope"):
        index.search("cat", subset=["d6", "nope"])


def test_loaded_index_runs_experiments_without_the_corpus(model, tmp_path):
    saved = _fresh(model, "cascade", ALL, tmp_path / "index")
    del saved
    index = cascade.load(tmp_path / "index")
    qrels = {"q0": {"d1": 1, "d2": 1}, "q1": {"d4": 1}}
    data = index.dataset({"q0": QUERIES[0], "q1": QUERIES[1]}, qrels)
    table = cascade.Experiment([index], data, ["nDCG@10"], baseline=None)
    assert table["nDCG@10"].iloc[0] == cascade.evaluate(index(data), qrels, ["nDCG@10"])["nDCG@10"]
    texts = [ALL[d] for d in ("d1", "d2", "d4")]
    ranking = index.rerank(QUERIES[0], texts)
    assert sorted(ranking.indices) == [0, 1, 2]
    assert index(cascade.dataset(ALL, {"q": "cat"})).doc_ids == index.corpus.ids  # the same documents: accepted
    with pytest.raises(cascade.ConfigError, match="index.dataset"):
        index(cascade.dataset({**ALL, "extra": "cat"}, {"q": "cat"}))


def test_a_copied_folder_opens_elsewhere(model, tmp_path):
    index = _fresh(model, "cascade", ALL, tmp_path / "index")
    index.add({"new1": "cat river mountain"}).delete(["d5"])
    want = snapshot(index)
    shutil.copytree(tmp_path / "index", tmp_path / "copy")
    shutil.rmtree(tmp_path / "index")
    copy = cascade.load(tmp_path / "copy")
    assert_same(snapshot(copy), want, exact=True)
    assert copy.doc("new1")["text"] == "cat river mountain" and "d5" not in copy


def _modes(index, mode: str):
    for stage in index.stages:
        stage.search_mode = mode
    return index


def _same_codec_rebuild(model, path, keep: dict):
    """An index of ``keep`` with the codec trained on all of ALL: saved whole, the rest deleted, compacted."""
    index = _fresh(model, "colbert2", ALL, path)
    index.delete([d for d in ALL if d not in keep])
    return index.compact()


@pytest.mark.parametrize("mode", ["plaid", "exhaustive"])
def test_compressed_colbert_grown_by_adds_equals_built_at_once_with_the_same_codec(model, tmp_path, mode):
    whole = _fresh(model, "colbert2", ALL, tmp_path / "whole")
    grown = _same_codec_rebuild(model, tmp_path / "grown", PART1)
    assert grown.manifest["rows"] == len(PART1)
    grown.add(PART2).add(PART3)
    assert grown.corpus.ids == whole.corpus.ids
    assert_same(snapshot(_modes(grown, mode)), snapshot(_modes(whole, mode)))
    stage_w, stage_g = whole.stages[0]._index, grown.stages[0]._index
    for name in ("codes", "residuals", "norm_deltas", "offsets", "ivf_docs", "ivf_offsets"):
        np.testing.assert_array_equal(getattr(stage_g, name), getattr(stage_w, name), err_msg=name)
    drift = grown.codec_drift()["colbert"]
    assert drift["added_tokens"] == int(stage_w.offsets[-1] - stage_w.offsets[len(PART1)])
    assert 0 < drift["added_cosine"] <= 1 and 0 < drift["sample_cosine"] <= 1 and drift["loss_ratio"] > 0


@pytest.mark.parametrize("mode", ["plaid", "exhaustive"])
def test_compressed_colbert_deletions_equal_the_compacted_index(model, tmp_path, mode):
    gone = ["d1", "d7", "d20", "d41", "d69"]
    index = _fresh(model, "colbert2", ALL, tmp_path / "index")
    index.delete(gone)
    compacted = _same_codec_rebuild(model, tmp_path / "compacted", {d: t for d, t in ALL.items() if d not in gone})
    got = snapshot(_modes(index, mode))
    assert all(d not in gone for ids, _ in got for d in ids)
    assert_same(got, snapshot(_modes(compacted, mode)))


def test_compressed_colbert_filters_keep_k_hits_and_equal_an_index_of_the_allowed(model, tmp_path):
    allowed = [d for i, d in enumerate(IDS) if i % 3 == 0]
    index = _fresh(model, "colbert2", ALL, tmp_path / "index")
    only = _same_codec_rebuild(model, tmp_path / "only", {d: ALL[d] for d in allowed})
    assert_same(snapshot(_modes(index, "exhaustive"), subset=allowed), snapshot(_modes(only, "exhaustive")))
    plaid, plain = snapshot(_modes(index, "plaid"), subset=allowed), snapshot(_modes(only, "plaid"))
    assert all(len(ids) == 10 and set(ids) <= set(allowed) for ids, _ in plaid)  # k hits, from the subset only
    for got, want in zip(plaid, plain):
        if len(want[0]) == 10:  # the cells held k allowed documents: the same search as the subset index
            assert_same([got], [want])



def test_plaid_takes_every_allowed_document_when_its_cells_hold_too_few(model, tmp_path):
    from cascade.stages.colbert import ColBERT

    index = (ColBERT(model=model, nbits=2, num_centroids=64, progress=False) % 10).index(ALL).save(tmp_path / "i")
    few = IDS[::7][:11]
    hits = snapshot(index, subset=few)
    assert all(len(ids) == 10 and set(ids) <= set(few) for ids, _ in hits)
    stage, mask = index.stages[0], np.isin(np.array(index.corpus.ids), few)
    from cascade.kernels.plaid import plaid_search

    queries, qmask = stage._encode_queries(tuple(QUERIES))
    shared = (queries, qmask, stage._index.codec.centroids, stage._index.codes, stage._index.offsets,
              stage._index.ivf_docs, stage._index.ivf_offsets, 10)
    params = dict(ncells=1, centroid_score_threshold=0.5, ndocs=256, exact_fn=stage.exact_scores, allowed=mask)
    without = (plaid_search(*shared, **params)[0] >= 0).sum(axis=1)
    assert without.min() < 10  # the probed cells alone hold fewer than k allowed documents for some query
    assert ((plaid_search(*shared, **params, fill=True)[0] >= 0).sum(axis=1) == 10).all()


def test_compact_retrain_equals_a_fresh_build_of_the_live_documents(model, tmp_path):
    gone = ["d2", "d30", "d50"]
    kept = {d: t for d, t in ALL.items() if d not in gone}
    index = _fresh(model, "colbert2", ALL, tmp_path / "index")
    index.delete(gone).compact(retrain=True)
    fresh = _fresh(model, "colbert2", kept, tmp_path / "fresh")
    assert_same(snapshot(index), snapshot(fresh))
    assert index.codec_drift()["colbert"]["added_tokens"] == 0
    np.testing.assert_array_equal(index.stages[0]._index.codec.centroids, fresh.stages[0]._index.codec.centroids)


def test_deleted_documents_never_reach_a_stage(model, tmp_path):
    """Even a retriever that knows nothing of deletions (a function) gets none: the batch drops them."""
    from cascade import Candidates, apply

    index = _fresh(model, "bm25", PART1, tmp_path / "index")
    index.delete(["d0", "d5"])
    every = apply(lambda batch: Candidates(np.arange(len(batch.corpus))[None, :].repeat(batch.num_queries, 0),
                                           np.zeros((batch.num_queries, len(batch.corpus)), np.float32)),
                  retrieves=True)
    hits = every.search("cat", k=100, corpus=index.corpus)
    assert len(hits) == len(PART1) - 2 and not {"d0", "d5"} & set(hits.doc_ids)
    assert every.search("cat", k=100, corpus=index.corpus, subset=["d1", "d2"]).doc_ids == ["d1", "d2"]
    index.add({"d0": "a deleted id can come back"})
    assert index.doc("d0")["text"] == "a deleted id can come back" and len(index) == len(PART1) - 1
