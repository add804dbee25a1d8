"""Saved indexes refuse, clearly and before any work: a folder that is not an index, a newer format, a damaged
file, another model, and bad writes (ids taken, unknown, all deleted, metadata that is not JSON)."""
from __future__ import annotations

import json
import shutil

import pytest

import cascade
from cascade.core.errors import ConfigError, CorruptArtifactError, DataError
from cascade.index import generations
from cascade.testing import tiny_sentence_transformer

from saved_helpers import make_docs, pipelines, state

DOCS = make_docs(25)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    model = tiny_sentence_transformer(root / "st")
    pipelines(str(model))["cascade"].index(DOCS).save(root / "index")
    return root


@pytest.fixture
def index_dir(saved, tmp_path):
    shutil.copytree(saved / "index", tmp_path / "index")
    return tmp_path / "index"


def _files(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name not in (".verified.json", "LOCK")}


def test_a_folder_that_is_not_an_index_says_what_it_lacks(tmp_path, index_dir):
    with pytest.raises(DataError, match="does not exist"):
        cascade.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a cascade index: it has no index.json"):
        cascade.load(tmp_path / "empty")
    (index_dir / "CURRENT").unlink()
    with pytest.raises(DataError, match="no CURRENT file"):
        cascade.load(index_dir)


def test_a_newer_format_is_refused(index_dir):
    meta = generations.read_json(index_dir / "index.json")
    generations.write_json(index_dir / "index.json", {**meta, "format_version": generations.FORMAT_VERSION + 1})
    with pytest.raises(DataError, match="newer cascade .*format version 2.*upgrade"):
        cascade.load(index_dir)


@pytest.mark.parametrize("name", ["s1.vectors.e0.npy", "docs.texts.e0.npy", "s2.tokens.e0.npy"])
def test_a_damaged_file_is_refused_with_its_path(index_dir, name):
    data = bytearray((index_dir / name).read_bytes())
    data[-3] ^= 0x40
    (index_dir / name).write_bytes(data)
    with pytest.raises(CorruptArtifactError, match=f"{index_dir}: {name} rows .* do not match their checksum"):
        cascade.load(index_dir)


def test_a_damaged_manifest_or_bm25_model_is_refused(index_dir):
    bm25 = next(index_dir.glob("s0.bm25.g0"))
    (bm25 / "params.index.json").write_text("{}")
    with pytest.raises(CorruptArtifactError, match="params.index.json does not match its checksum"):
        cascade.load(index_dir)
    (index_dir / "gen-00000000.json").write_text((index_dir / "gen-00000000.json").read_text().replace('"rows": 25',
                                                                                                      '"rows": 24'))
    with pytest.raises(CorruptArtifactError, match="gen-00000000.json does not match its checksum"):
        cascade.load(index_dir)


def test_another_model_at_the_same_path_is_refused(saved, tmp_path):
    shutil.copytree(saved / "index", tmp_path / "index")
    moved = tiny_sentence_transformer(tmp_path / "other", seed=1)
    with pytest.raises(DataError, match="differ from those that built the index .*model_content"):
        cascade.load(tmp_path / "index", models={"biencoder": str(moved), "colbert": str(moved)})
    shutil.copytree(saved / "st", tmp_path / "moved")  # the same files elsewhere: accepted
    index = cascade.load(tmp_path / "index", models={"biencoder": str(tmp_path / "moved"),
                                                     "colbert": str(tmp_path / "moved")})
    assert len(index) == len(DOCS)
    with pytest.raises(ConfigError, match="does not have"):
        cascade.load(tmp_path / "index", models={"nope": "x"})


def test_bad_writes_are_refused_before_any_work(index_dir):
    index = cascade.load(index_dir)
    seen, files = state(index), _files(index_dir)
    with pytest.raises(DataError, match="already in the index, e.g. 'd1'.*index.update"):
        index.add({"new": "cat", "d1": "dog"})
    with pytest.raises(DataError, match="not in the index, e.g. 'nope'.*index.add"):
        index.update({"nope": "cat"})
    with pytest.raises(DataError, match="not in the index, e.g. 'nope'.*missing='ignore'"):
        index.delete(["d1", "nope"])
    with pytest.raises(DataError, match="every document"):
        index.delete(list(DOCS))
    with pytest.raises(DataError, match="need ids"):
        index.add(["a text without an id"])
    with pytest.raises(DataError, match="text is empty"):
        index.add({"new": "  "})
    with pytest.raises(DataError, match="metadata field 'when' holds .*not plain JSON"):
        index.add({"new": "cat"}, metadata={"new": {"when": object()}})
    with pytest.raises(DataError, match="metadata names documents that are not being added"):
        index.add({"new": "cat"}, metadata={"other": {"a": 1}})
    with pytest.raises(DataError, match="list of document ids"):
        index.delete("d1")
    assert state(index) == seen and _files(index_dir) == files
    assert state(cascade.load(index_dir)) == seen
    index.delete(["d1", "nope"], missing="ignore")
    assert "d1" not in index and index.generation == 1


def test_saving_needs_an_indexed_supported_pipeline_and_a_new_folder(saved, tmp_path):
    from cascade import apply
    from cascade.stages.bm25 import BM25

    with pytest.raises(ConfigError, match="index a corpus before saving"):
        BM25().save(tmp_path / "a")
    with pytest.raises(ConfigError, match="backend=bm25s"):
        BM25(backend="rank_bm25").index(DOCS).save(tmp_path / "a")
    with pytest.raises(ConfigError, match="functions and unions"):
        (BM25() >> apply(lambda batch: batch.candidates.scores)).index(DOCS).save(tmp_path / "a")
    with pytest.raises(DataError, match="already exists"):
        BM25().index(DOCS).save(saved / "index")
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
    loaded = cascade.load(saved / "index")
    with pytest.raises(ConfigError, match="searches its own documents"):
        loaded.index(DOCS)
    meta = json.loads((saved / "index" / "index.json").read_text())
    assert [s["class"] for s in meta["stages"]] == ["BM25", "BiEncoder", "ColBERT"]
