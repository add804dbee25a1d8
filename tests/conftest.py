"""Shared test fixtures: tiny datasets written in the test, the real SciFact location."""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.core.data import Corpus, Dataset

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"

DOCS = {
    "d1": ("Cats", "The cat sat on the mat and purred."),
    "d2": ("Dogs", "Dogs bark loudly at the mail carrier."),
    "d3": ("Felines", "A cat and a kitten chase a mouse."),
    "d4": ("Birds", "Birds sing in the morning light."),
    "d5": ("Fish", "Fish swim in cold rivers and lakes."),
    "d6": ("Pets", "Cats and dogs are the most common pets."),
}
QUERIES = {"q1": "cat on a mat", "q2": "barking dogs", "q3": "fish in rivers", "q4": "singing birds"}
QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}, "q3": {"d5": 2}, "q4": {"d4": 1}}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache dir unless it sets one."""
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _restore_logging():
    """Undo what a test's in-process CLI call does to logging: the commands set the ``cascade`` logger to INFO
    and Hydra or ``logging.basicConfig`` add handlers (on streams a capture fixture then closes). Left in place,
    a later test sees INFO records it expects to be filtered, and logging errors on the closed streams."""
    manager = logging.Logger.manager
    before = {name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
              for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root = logging.getLogger()
    root_before = (root.level, list(root.handlers))
    yield
    for name, lg in list(manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        level, handlers, propagate, disabled = before.get(name, (logging.NOTSET, [], True, False))
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled
    root.setLevel(root_before[0])
    root.handlers[:] = root_before[1]


def write_beir(root: Path, docs=DOCS, queries=QUERIES, qrels=QRELS, split="test") -> Path:
    """Write a BEIR-layout dataset folder and return it."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as out:
        for doc_id, (title, text) in docs.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in qrels.items():
            for doc_id, rel in rels.items():
                out.write(f"{qid}\t{doc_id}\t{rel}\n")
    return root


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    return write_beir(tmp_path / "tiny")


@pytest.fixture
def tiny_dataset() -> Dataset:
    corpus = Corpus(list(DOCS), [f"{t} {x}" for t, x in DOCS.values()])
    return Dataset(corpus, list(QUERIES), list(QUERIES.values()), QRELS, "tiny")


@pytest.fixture(scope="session")
def scifact_path() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    return SCIFACT


def cascade_cli(*args: str, cwd, cache) -> subprocess.CompletedProcess:
    """``cascade ARGS`` in a subprocess (this interpreter), with ``CASCADE_CACHE_DIR=cache``."""
    env = {**os.environ, "CASCADE_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))
