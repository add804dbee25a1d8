"""The README's Python examples run as written, in order, from the repo root.

To keep the suite fast the corpus is cut to the first 300 documents plus those judged
for the first 20 queries (the neural example would otherwise encode all of SciFact).
"""
import re

import numpy as np

import cascade
from cascade import Corpus, Dataset
from conftest import REPO


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def _small(ds: Dataset) -> Dataset:
    ds = ds.subset(20)
    judged = {d for docs in ds.qrels.values() for d in docs}
    keep = [i for i, d in enumerate(ds.corpus.ids) if i < 300 or d in judged]
    corpus = Corpus([ds.corpus.ids[i] for i in keep], [ds.corpus.texts[i] for i in keep])
    return Dataset(corpus, ds.query_ids, ds.query_texts, ds.qrels, ds.name)


def test_readme_python_blocks_run(scifact_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    real_load = cascade.load_beir
    monkeypatch.setattr(cascade, "load_beir", lambda *a, **k: _small(real_load(*a, **k)))
    namespace: dict = {}
    blocks = _python_blocks()
    assert len(blocks) >= 3
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    assert "nDCG@10" in capsys.readouterr().out
    run = namespace["run"]
    assert [t.name for t in run.stages] == ["bm25", "biencoder", "colbert"]
    # the add-a-stage example keeps the shortest documents, at most k of them
    ds = namespace["ds"]
    stage_run = (namespace["BM25"]() % 50 >> namespace["DocLength"](k=5))(ds)
    for row in stage_run.candidates.doc_idx:
        lengths = [len(ds.corpus.texts[i]) for i in row if i >= 0]
        assert lengths == sorted(lengths) and len(lengths) <= 5
    assert np.all(stage_run.candidates.lengths <= 5)
