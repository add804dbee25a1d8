import logging
import zipfile

import pytest

from cascade import DataError, load_beir, load_trec, per_query
from cascade.app.download import download_beir
from cascade.core.data import Corpus
from cascade.stages.bm25 import BM25

from conftest import write_beir


def test_load_beir_joins_title_and_text(tiny_beir):
    ds = load_beir(tiny_beir)
    assert len(ds.corpus) == 6 and ds.query_ids == ("q1", "q2", "q3", "q4")
    assert ds.corpus.texts[0] == "Cats The cat sat on the mat and purred."
    assert ds.qrels["q3"] == {"d5": 2}


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DataError, match="does not exist; set dataset.path"):
        load_beir(tmp_path / "nope")


def test_malformed_jsonl_names_file_and_line(tiny_beir):
    with (tiny_beir / "corpus.jsonl").open("a") as out:
        out.write("{not json\n")
    with pytest.raises(DataError, match=r"corpus.jsonl, line 7: not valid JSON"):
        load_beir(tiny_beir)


def test_missing_split_lists_available(tiny_beir):
    with pytest.raises(DataError, match=r"split 'dev'.*available splits: \['test'\]"):
        load_beir(tiny_beir, split="dev")


def test_qrels_with_unknown_queries_and_docs_warn_and_evaluate_rest(tmp_path, caplog):
    root = write_beir(tmp_path / "d", qrels={"q1": {"d1": 1, "dX": 1}, "qX": {"d2": 1}, "q2": {"d2": 1}})
    with caplog.at_level(logging.WARNING):
        ds = load_beir(root)
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert "1 queries not in the queries file" in caplog.text
    assert "1 documents not in the corpus" in caplog.text


def test_empty_corpus_rejected(tmp_path):
    root = write_beir(tmp_path / "d", docs={})
    with pytest.raises(DataError, match="no documents"):
        load_beir(root)
    with pytest.raises(DataError, match="empty"):
        Corpus([], [])


def test_duplicate_doc_ids_rejected():
    with pytest.raises(DataError, match="repeats document id 'a'"):
        Corpus(["a", "a"], ["x", "y"])


def test_fingerprint_tracks_content():
    a = Corpus(["a", "b"], ["x", "y"])
    assert a.fingerprint == Corpus(["a", "b"], ["x", "y"]).fingerprint
    assert a.fingerprint != Corpus(["a", "b"], ["x", "z"]).fingerprint
    assert a.fingerprint != Corpus(["b", "a"], ["x", "y"]).fingerprint


def test_load_trec_files(tmp_path, tiny_beir):
    (tmp_path / "topics.tsv").write_text("q1\tcat on a mat\nq9\tunjudged topic\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 0 d3 0\n")
    ds = load_trec(tiny_beir / "corpus.jsonl", tmp_path / "topics.tsv", tmp_path / "qrels.txt")
    assert ds.query_ids == ("q1",) and ds.qrels == {"q1": {"d1": 1, "d3": 0}}
    (tmp_path / "bad.tsv").write_text("q1 no tab here\n")
    with pytest.raises(DataError, match="bad.tsv, line 1"):
        load_trec(tiny_beir / "corpus.jsonl", tmp_path / "bad.tsv")


def test_download_beir_from_a_local_zip(tmp_path, tiny_beir):
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in tiny_beir.rglob("*"):
            zipped.write(path, f"tiny/{path.relative_to(tiny_beir)}")
    target = download_beir("tiny", tmp_path / "data", url=archive.as_uri())
    assert load_beir(target).query_ids == ("q1", "q2", "q3", "q4")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["tiny"]  # no temp dirs left


def test_download_failure_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        download_beir("tiny", tmp_path / "data", url=(tmp_path / "missing.zip").as_uri())
    assert list((tmp_path / "data").iterdir()) == []


def test_empty_query_text_gives_empty_row_scored_zero(tmp_path):
    root = write_beir(tmp_path / "d", queries={"q1": "", "q2": "dogs"}, qrels={"q1": {"d1": 1}, "q2": {"d2": 1}})
    ds = load_beir(root)
    assert ds.query_texts == ("", "dogs")
    run = BM25(k=10)(ds)
    assert run.candidates.lengths.tolist()[0] == 0
    table = per_query(run, ds.qrels, ["nDCG@10"])["nDCG@10"]
    assert table["q1"] == 0.0 and table["q2"] > 0
