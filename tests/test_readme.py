"""The README's Python examples run as written, in order, from the repo root.

To keep the suite fast the corpus is cut to the first 300 documents plus those judged
for the first 20 queries (the neural example would otherwise encode all of SciFact).
The helpers here are shared with tests/test_docs.py, which runs the docs/ pages the same way.
"""
import re
from pathlib import Path

import cascade
from cascade import Corpus, Dataset

from conftest import REPO

README = REPO / "README.md"


def python_blocks(path: Path = README) -> list[str]:
    """The ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def small(ds: Dataset) -> Dataset:
    """The first 20 queries, over the first 300 documents plus every document they judge."""
    ds = ds.subset(20)
    judged = {d for docs in ds.qrels.values() for d in docs}
    keep = [i for i, d in enumerate(ds.corpus.ids) if i < 300 or d in judged]
    corpus = Corpus([ds.corpus.ids[i] for i in keep], [ds.corpus.texts[i] for i in keep])
    return Dataset(corpus, ds.query_ids, ds.query_texts, ds.qrels, ds.name)


def use_small_scifact(monkeypatch) -> None:
    """Make ``cascade.load_beir`` (and so ``from cascade import load_beir``) return :func:`small` datasets."""
    real_load = cascade.load_beir
    monkeypatch.setattr(cascade, "load_beir", lambda *a, **k: small(real_load(*a, **k)))


def run_blocks(blocks: list[str], source: str, namespace: dict | None = None) -> dict:
    """Execute ``blocks`` in order in one namespace (the repo root as working directory); the namespace."""
    namespace = {} if namespace is None else namespace
    for index, block in enumerate(blocks):
        exec(compile(block, f"{source} python block {index}", "exec"), namespace)
    return namespace


def test_readme_python_blocks_run(scifact_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    use_small_scifact(monkeypatch)
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace = run_blocks(blocks, "README.md")
    out = capsys.readouterr().out
    assert "nDCG@10" in out
    run = namespace["run"]
    assert [t.name for t in run.stages] == ["bm25", "biencoder", "colbert"]
    assert set(run.query_ids) == set(namespace["ds"].query_ids[:20])
    # the rerank example puts the Eiffel Tower sentence (position 1) first
    assert "[1, 0]" in out
