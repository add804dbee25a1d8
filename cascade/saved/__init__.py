"""Saved indexes: a folder you own, copy and grow (build, save, load, add, delete, update, compact).

::

    import cascade
    index = (BM25() % 100 >> BiEncoder() % 10).index(corpus).save("my-index")
    index = cascade.load("my-index")              # on any machine: a ready pipeline, no corpus file needed
    index.search("a question", k=5, where={"source": "wiki"})
    index.add({"d9": "new text"}); index.delete(["d1"]); index.compact()

The folder's format: :mod:`cascade.index.generations` (generations and the atomic switch),
:mod:`cascade.index.appendable` (append-only arrays, checksums), :mod:`cascade.index.docstore`
(texts and metadata); each stage's files: :mod:`cascade.saved.parts`, :mod:`cascade.saved.bm25_part`,
:mod:`cascade.saved.colbert_part`; writing: :mod:`cascade.saved.saving` (the first generation) and
:mod:`cascade.saved.write` (later ones).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cascade.saved.index import SavedIndex
from cascade.saved.saving import save

__all__ = ["SavedIndex", "load", "save"]


def load(path: str | Path, models: Mapping[str, str] | None = None, device: str | None = None) -> SavedIndex:
    """Open the saved index in folder ``path``: a ready pipeline (see :class:`SavedIndex`)."""
    return SavedIndex(path, models, device)
