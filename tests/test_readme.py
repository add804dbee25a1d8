"""The README's Python examples run as written (from the repo root, on SciFact)."""
import re

import pytest

from conftest import REPO


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, scifact_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(_python_blocks()[index], f"README.md python block {index}", "exec"), namespace)
    if "DocLength" in namespace:  # the add-a-stage example must pass the stage contract
        from cascade import load_beir

        ds = load_beir(scifact_path).subset(5)
        from stages.bm25 import BM25

        run = (BM25() % 50 >> namespace["DocLength"](k=5))(ds)
        lengths = [[len(ds.corpus.texts[i]) for i in row if i >= 0] for row in run.candidates.doc_idx]
        assert all(row == sorted(row) and len(row) <= 5 for row in lengths)
