"""Every input check runs before any work and names the file, the line and the fix."""
import json

import pytest

from cascade import Corpus, DataError, Dataset, load_beir, load_trec

from conftest import write_beir


def test_duplicate_query_ids_are_an_error(tiny_beir):
    with (tiny_beir / "queries.jsonl").open("a") as out:
        out.write(json.dumps({"_id": "q1", "text": "another text for q1"}) + "\n")
    with pytest.raises(DataError, match="query id 'q1' appears more than once"):
        load_beir(tiny_beir)
    corpus = Corpus(["d"], ["text"])
    with pytest.raises(DataError, match="query id 'a' appears more than once"):
        Dataset(corpus, ["a", "a"], ["x", "y"])


def test_qrels_without_header_keep_their_first_row(tmp_path):
    root = write_beir(tmp_path / "b")
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td2\t1\n")  # no header, first score an integer
    assert set(load_beir(root).qrels) == {"q1", "q2"}
    (root / "qrels" / "test.tsv").write_text("q1\td1\t0.5\nq2\td2\t1\n")  # no header, first score not an integer
    with pytest.raises(DataError, match="line 1: relevance '0.5' is not an integer"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert set(load_beir(root).qrels) == {"q1"}


def test_non_utf8_file_names_file_and_line(tmp_path):
    root = write_beir(tmp_path / "b")
    lines = (root / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Felines", b"Fel\xffines")
    (root / "corpus.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"corpus.jsonl, line 3: not valid UTF-8.*re-save the file as UTF-8"):
        load_beir(root)


def test_lone_surrogate_is_refused_at_load(tmp_path):
    root = write_beir(tmp_path / "b")
    with (root / "queries.jsonl").open("a") as out:
        out.write('{"_id": "q9", "text": "bad \\ud800 query"}\n')
    with pytest.raises(DataError, match="queries.jsonl, line 5: text holds an invalid character"):
        load_beir(root)
    with pytest.raises(DataError, match="query 0 holds an invalid character"):
        Dataset(Corpus(["d"], ["t"]), ["q"], ["bad \ud800"])


def test_all_empty_corpus_is_refused(tmp_path):
    root = write_beir(tmp_path / "b", docs={"d1": ("", ""), "d2": ("", " ")}, qrels={"q1": {"d1": 1}})
    with pytest.raises(DataError, match="every one of the 2 documents is empty"):
        load_beir(root)


def test_duplicate_topics_in_trec_input(tmp_path):
    root = write_beir(tmp_path / "b")
    (tmp_path / "topics.tsv").write_text("q1\tcats\nq1\tdogs\n")
    with pytest.raises(DataError, match="topics.tsv, line 2: query id 'q1' appears more than once"):
        load_trec(root / "corpus.jsonl", tmp_path / "topics.tsv")


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk (or any error) mid-write leaves neither a half file nor a .tmp behind."""
    import errno
    from pathlib import Path

    from cascade.core.files import atomic_write_text

    (tmp_path / "results.md").write_text("old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(tmp_path / "results.md", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
    assert (tmp_path / "results.md").read_text() == "old"


def test_duplicate_ids_name_the_lines(tmp_path):
    root = write_beir(tmp_path / "b")
    with (root / "queries.jsonl").open("a") as out:
        out.write(json.dumps({"_id": "q2", "text": "again"}) + "\n")
    with pytest.raises(
        DataError, match=r"queries.jsonl, line 5: query id 'q2' appears more than once \(first on line 2\)"
    ):
        load_beir(root)
    root = write_beir(tmp_path / "c")
    with (root / "corpus.jsonl").open("a") as out:
        out.write(json.dumps({"_id": "d1", "title": "x", "text": "y"}) + "\n")
    with pytest.raises(DataError, match=r"corpus.jsonl, line 7: document id 'd1' repeats line 1"):
        load_beir(root)


def test_all_empty_corpus_names_the_file(tmp_path):
    root = write_beir(tmp_path / "b", docs={"d1": ("", ""), "d2": ("", " ")}, qrels={"q1": {"d1": 1}})
    with pytest.raises(DataError, match=r"corpus.jsonl: every one of the 2 documents is empty"):
        load_beir(root)


def test_a_stage_module_that_fails_to_import_shows_the_cause(tmp_path):
    from omegaconf import OmegaConf

    from cascade import ConfigError
    from cascade.app.runner import build

    (tmp_path / "brokenstage.py").write_text("from cascade.kernels.no_such_module import x\nclass S: pass\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match="No module named 'cascade.kernels.no_such_module'"):
            build(OmegaConf.create({"_target_": "brokenstage.S"}), "pipeline")
    finally:
        sys.path.remove(str(tmp_path))


def test_instantiation_errors_are_kept_whole():
    """A multi-line error from a constructor reaches the user whole, with its cause."""
    from omegaconf import OmegaConf

    from cascade import ConfigError
    from cascade.app.runner import build

    with pytest.raises(ConfigError) as info:
        build(OmegaConf.create({"_target_": "cascade.core.fusion.Fusion", "weight_in": "x"}), "fusion")
    text = str(info.value)
    assert "\n" not in text and "caused by" in text and "TypeError" in text
