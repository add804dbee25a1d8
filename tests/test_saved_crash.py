"""Saved indexes are crash-safe: a writer SIGKILLed at any of its steps leaves the index as it was before or
after; readers keep their snapshot while a writer works; a second writer waits for the lock."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cascade
from cascade.core.errors import CascadeError
from cascade.index import appendable, generations
from cascade.saved.index import manifest_files
from cascade.testing import tiny_sentence_transformer

from saved_helpers import make_docs, pipelines, state

WRITER = Path(__file__).with_name("saved_writer.py")
FOLLOW = {"f1": "cat river water", "f2": "music night moon"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("model") / "st"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, model) -> dict[str, Path]:
    """A saved cascade index of 30 documents, and the same with deletions (what compact has to drop)."""
    root = tmp_path_factory.mktemp("pristine")
    pipelines(model)["cascade"].index(make_docs(30)).save(root / "plain")
    shutil.copytree(root / "plain", root / "deleted")
    cascade.load(root / "deleted").delete(["d0", "d11", "d12"])
    pipelines(model)["colbert2"].index(make_docs(30)).save(root / "colbert2")
    return {"plain": root / "plain", "deleted": root / "deleted", "colbert2": root / "colbert2"}


def _writer(mode: str, source: Path, work: Path, op: str, model: str, points: int = 0) -> str:
    env = {**os.environ, "POINTS": str(points)}
    done = subprocess.run([sys.executable, str(WRITER), mode, str(source), str(work), op, model], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _follow(folder: Path, scratch: Path) -> dict:
    """The state after one more write (an add) on a copy of ``folder``."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(folder, scratch)
    return state(cascade.load(scratch).add(FOLLOW))


def _only_referenced(index) -> None:
    names = {p.name for p in index.root.iterdir()}
    assert names == generations.referenced(index.manifest) | {"index.json", "CURRENT", "LOCK", ".verified.json"}


@pytest.mark.parametrize("op, source", [("add", "plain"), ("delete", "plain"), ("update", "plain"),
                                        ("compact", "deleted"), ("add", "colbert2")])
def test_a_write_killed_at_any_step_leaves_the_index_before_or_after(model, pristine, tmp_path, op, source):
    base = pristine[source]
    points = int(_writer("count", base, tmp_path, op, model))
    assert points >= 6  # every file written is a point: the test would not test much otherwise
    before, after = state(cascade.load(base)), state(cascade.load(tmp_path / "count"))
    assert before != after
    follows = {"before": _follow(base, tmp_path / "fb"), "after": _follow(tmp_path / "count", tmp_path / "fa")}
    ends = json.loads(_writer("kill", base, tmp_path, op, model, points))
    assert [e for _, e in ends] == ["killed"] * points + ["exit 0"]
    seen = []
    for i, _ in ends:
        folder = tmp_path / f"k{i}"
        index = cascade.load(folder)
        got = state(index)
        assert got in (before, after), f"killed at point {i}: the index is neither as before nor as after"
        which = "before" if got == before else "after"
        seen.append(which)
        appendable.verify(folder, manifest_files(index.manifest, index.saved_parts), full=True)
        index.add(FOLLOW)  # the next writer recovers: cuts unfinished appends, removes leftovers
        assert state(index) == follows[which], f"killed at point {i}: the next write went wrong"
        _only_referenced(index)
    assert "before" in seen and "after" in seen and seen[-1] == "after"


def test_a_save_killed_at_any_step_leaves_no_index_or_a_whole_one(model, tmp_path):
    points = int(_writer("count", tmp_path, tmp_path, "save", model))
    whole = state(cascade.load(tmp_path / "count" / "index"))
    ends = json.loads(_writer("kill", tmp_path, tmp_path, "save", model, points))
    assert [e for _, e in ends] == ["killed"] * points + ["exit 0"]
    for i, _ in ends[:-1]:
        assert not (tmp_path / f"k{i}" / "index").exists(), f"killed at point {i}, a partial index is in place"
    assert state(cascade.load(tmp_path / f"k{points + 1}" / "index")) == whole


def test_readers_keep_their_snapshot_while_a_writer_works(model, pristine, tmp_path):
    shutil.copytree(pristine["plain"], tmp_path / "index")
    reader = cascade.load(tmp_path / "index")
    seen = state(reader)
    writer = cascade.load(tmp_path / "index")
    writer.add(FOLLOW).delete(["d1", "d2", "f1"]).update({"d3": "train ship sea"}).compact()
    assert state(reader) == seen  # its files are kept open (or replaced ones still mapped)
    assert reader.refresh() and state(reader) == state(writer) != seen
    assert not reader.refresh()


def test_a_second_writer_waits_for_the_lock_then_fails_clearly(model, pristine, tmp_path):
    shutil.copytree(pristine["plain"], tmp_path / "index")
    index = cascade.load(tmp_path / "index")
    with generations.writer_lock(tmp_path / "index"):
        with pytest.raises(CascadeError, match=r"another process \(pid \d+\) is writing .* within 0.2 s"):
            index.add(FOLLOW, timeout=0.2)
    assert index.generation == 0 and "f1" not in index
    index.add(FOLLOW, timeout=0.2)
    assert "f1" in index


def test_two_writers_on_one_folder_both_land(model, pristine, tmp_path):
    shutil.copytree(pristine["plain"], tmp_path / "index")
    first, second = cascade.load(tmp_path / "index"), cascade.load(tmp_path / "index")
    first.add({"f1": "cat river water"})
    second.add({"f2": "music night moon"}).delete(["d1"])  # starts from the first writer's generation
    final = cascade.load(tmp_path / "index")
    assert final.generation == 3 and "f1" in final and "f2" in final and "d1" not in final
