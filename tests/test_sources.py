"""Data from anywhere: lists, dicts, DataFrames, BEIR folders and ir_datasets ids, checked before any work."""
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import cascade
from cascade import Corpus, DataError, Dataset, load_beir
from cascade.core.sources import as_id, qrels, queries

import fake_irds
from conftest import DOCS, QRELS, QUERIES, REPO

TEXTS = {d: f"{t} {x}" for d, (t, x) in DOCS.items()}


def _same(a: Dataset, b: Dataset) -> None:
    assert a.corpus.ids == b.corpus.ids and a.corpus.texts == b.corpus.texts
    assert a.corpus.fingerprint == b.corpus.fingerprint
    assert (a.query_ids, a.query_texts, a.qrels) == (b.query_ids, b.query_texts, b.qrels)


def test_dicts_dataframes_and_beir_folder_give_the_same_dataset(tiny_beir):
    from_beir = cascade.load_dataset(tiny_beir)
    from_dicts = cascade.dataset(TEXTS, QUERIES, QRELS, name="tiny")
    frames = cascade.dataset(
        pd.DataFrame({"docno": list(TEXTS), "text": list(TEXTS.values())}),
        pd.DataFrame({"qid": list(QUERIES), "query": list(QUERIES.values())}),
        pd.DataFrame([(q, d, r) for q, rels in QRELS.items() for d, r in rels.items()],
                     columns=["qid", "docno", "label"]))
    beir_style = cascade.dataset({d: {"title": t, "text": x} for d, (t, x) in DOCS.items()}, QUERIES,
                                 tiny_beir / "qrels" / "test.tsv")
    for other in (from_dicts, frames, beir_style):
        _same(other, from_beir)
    assert cascade.corpus(tiny_beir).fingerprint == from_beir.corpus.fingerprint


def test_list_sources_get_positional_ids_and_run_end_to_end():
    from cascade.stages.bm25 import BM25

    docs = ["The cat sat on the mat.", "Dogs bark at night.", "Fish swim in rivers."]
    ds = cascade.dataset(docs, ["barking dogs", "swimming fish"], {"0": {"1": 1}, "1": {"2": 1}})
    assert ds.corpus.ids == ("0", "1", "2") and ds.query_ids == ("0", "1")
    run = (BM25() % 2)(ds)
    assert [max(d, key=d.get) for d in run.to_dict().values()] == ["1", "2"]
    assert cascade.evaluate(run, ds.qrels, ["RR@10"]) == {"RR@10": 1.0}


def test_ids_of_any_integer_type_become_strings():
    frame = pd.DataFrame({"docno": np.array([7, 8], dtype=np.int64), "text": ["a b", "c d"]})
    assert cascade.corpus(frame).ids == ("7", "8")
    assert cascade.corpus({np.int32(3): "x", "y": "z"}).ids == ("3", "y")
    labels = pd.DataFrame({"qid": [1, 1], "docno": [7, 8], "label": [1.0, 0.0]})  # float labels, as NaN-able columns
    assert qrels(labels) == {"1": {"7": 1, "8": 0}}
    assert qrels({1: {np.int64(7): np.int64(2)}}) == {"1": {"7": 2}}
    assert as_id(np.str_("d1"), "x") == "d1" and type(as_id(np.str_("d1"), "x")) is str


@pytest.mark.parametrize("source, message", [
    ({1.0: "text"}, "ids must be strings or integers"),
    ({True: "text"}, "ids must be strings or integers"),
    ({None: "text"}, "ids must be strings or integers"),
    ({"a b": "text"}, "holds whitespace"),
    ({"": "text"}, "id '' is empty"),
    ({1: "x", "1": "y"}, "appears twice"),
    (pd.DataFrame({"docno": ["a", "a"], "text": ["x", "y"]}), "'a' appears twice"),
    (["fine", "  "], "document '1': the text is empty"),
    (["fine", None], "document '1': the text is a NoneType"),
    (pd.DataFrame({"docno": ["a", "b"], "text": ["x", np.nan]}), "NaN: a missing value"),
    (["fine", b"bytes"], "the text is a bytes"),
    (pd.DataFrame({"id": ["a"], "body": ["x"]}), "no docno or text column .* give it columns docno, text"),
    (pd.DataFrame({"docno": [], "text": []}), "the corpus source holds no document"),
    ([], "the corpus source holds no document"),
    ({"a": {"title": "", "text": ""}}, "document 'a': the text is empty"),
    (42, "cannot read corpus from a int"),
    ("/no/such/folder", "neither a BEIR folder"),
])
def test_bad_corpus_is_a_clear_error(source, message):
    with pytest.raises(DataError, match=message):
        cascade.corpus(source)


@pytest.mark.parametrize("source, message", [
    ("just one question", "got one string"),
    (pd.DataFrame({"qid": ["q1"], "text": ["x"]}), "no query column"),
    ({"q1": ""}, "query 'q1': the text is empty"),
    ({"q1": 3}, "the text is a int"),
    ({"q1": "x", 2.5: "y"}, "ids must be strings or integers"),
])
def test_bad_queries_are_a_clear_error(source, message):
    with pytest.raises(DataError, match=message):
        queries(source)


@pytest.mark.parametrize("source, message", [
    ({"q1": {"d1": 0.5}}, "relevance 0.5 is not an integer"),
    ({"q1": {"d1": "1"}}, "relevance '1' is not an integer"),
    ({"q1": ["d1"]}, "expected a dict"),
    ({"q1": {1: 1, "1": 0}}, "'1' appears twice"),
    (pd.DataFrame({"qid": ["q1", "q1"], "docno": ["d1", "d1"], "label": [1, 0]}), "judges document 'd1' twice"),
    (pd.DataFrame({"qid": ["q1"], "docno": ["d1"], "relevance": [1]}), "no label column"),
    ("/no/such/qrels.tsv", "does not exist"),
    ([("q1", "d1", 1)], "cannot read qrels from a list"),
])
def test_bad_qrels_are_a_clear_error(source, message):
    with pytest.raises(DataError, match=message):
        qrels(source)


def test_qrels_that_match_nothing_are_an_error_and_partial_ones_are_kept(caplog):
    with pytest.raises(DataError, match="no judgment .* names both a query and a document"):
        cascade.dataset(TEXTS, QUERIES, {"1": {"7": 1}})  # e.g. ids written differently
    ds = cascade.dataset(TEXTS, QUERIES, {"q1": {"d1": 1, "zzz": 1}, "q9": {"d1": 1}})
    assert ds.qrels == {"q1": {"d1": 1}} and ds.query_ids == tuple(QUERIES)  # every given query is kept
    assert "not in the corpus" in caplog.text and "not in the queries" in caplog.text


def test_irds_id_loads_like_the_beir_folder(tiny_beir, monkeypatch):
    fake_irds.install(monkeypatch, {"beir/tiny/test": fake_irds.tiny(extra_queries={"q9": "unjudged"})})
    ds = cascade.load_dataset("irds:beir/tiny/test")
    _same(ds, load_beir(tiny_beir))  # only judged queries, title and text joined as in a BEIR folder
    assert ds.name == "beir-tiny-test"
    mixed = cascade.dataset("irds:beir/tiny/test", {"q1": "cat"}, "irds:beir/tiny/test")
    assert mixed.corpus.fingerprint == ds.corpus.fingerprint and mixed.qrels == {"q1": QRELS["q1"]}
    with pytest.raises(DataError, match="'beir/nope' is not an ir_datasets id"):
        cascade.load_dataset("irds:beir/nope")


def test_irds_without_qrels_keeps_every_query_and_asks_for_docs(monkeypatch):
    full = fake_irds.tiny()
    fake_irds.install(monkeypatch, {"q": fake_irds.FakeDataset(full.docs, full.queries),
                                    "no-docs": fake_irds.FakeDataset(None, full.queries)})
    assert cascade.load_dataset("irds:q").query_ids == tuple(QUERIES)
    with pytest.raises(DataError, match="has no docs"):
        cascade.corpus("irds:no-docs")


def test_missing_ir_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # `import ir_datasets` raises ImportError
    with pytest.raises(DataError, match=r'needs the ir_datasets package.*pip install "cascade-rerank\[irds\]"'):
        cascade.load_dataset("irds:beir/scifact/test")


def test_dataset_irds_config_builds_from_yaml(monkeypatch):
    fake_irds.install(monkeypatch, {"beir/tiny/test": fake_irds.tiny()})
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=irds", "dataset.id=beir/tiny/test", "paths.output_dir=x"])
    ds = instantiate(cfg.dataset)
    assert isinstance(ds, Dataset) and ds.query_ids == tuple(QUERIES) and len(ds.corpus) == len(DOCS)


def test_dataset_and_corpus_pass_through():
    corpus = Corpus(["a"], ["text"])
    assert cascade.corpus(corpus) is corpus
    ds = cascade.dataset(corpus, ["q"])
    assert cascade.load_dataset(ds) is ds and ds.qrels == {}
    with pytest.raises(DataError, match="for in-memory data use cascade.dataset"):
        cascade.load_dataset(["a list"])


def test_a_stage_runs_on_a_folder_or_irds_id_and_says_what_to_do_with_a_list(tiny_beir, monkeypatch):
    from cascade.stages.bm25 import BM25

    fake_irds.install(monkeypatch, {"beir/tiny/test": fake_irds.tiny()})
    by_folder, by_irds = (BM25() % 3)(tiny_beir), (BM25() % 3)("irds:beir/tiny/test")
    assert by_folder.to_dict() == by_irds.to_dict() == (BM25() % 3)(load_beir(tiny_beir)).to_dict()
    with pytest.raises(DataError, match=r"got a list; for in-memory data use cascade.dataset\(corpus, queries"):
        (BM25() % 3)(["a text", "another"])
