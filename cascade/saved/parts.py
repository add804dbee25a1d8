"""What each stage keeps in a saved index, and how it is written, opened, grown and compacted.

A *part* is one leaf stage's share of the folder. Its manifest entry lists its files; the part
writes them at :meth:`Part.export` (from the stage's opened cache index), opens them into the stage
at :meth:`Part.attach` (the same fields the stage's own ``load`` fills), grows them through an
:class:`Adder` (documents appended, then :meth:`Adder.finish` given the rows that stay live), and
rewrites them without deleted rows at :meth:`Part.compact`. Rows are the index's rows throughout.

This module: the base class, stages without an index (the cross-encoder) and the bi-encoder's
vectors. BM25 and ColBERT are in :mod:`cascade.saved.bm25_part` and :mod:`cascade.saved.colbert_part`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.core.data import Corpus
from cascade.core.stage import Stage
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index.appendable import Appender, new_spec, open_array
from cascade.saved.txn import Txn

if TYPE_CHECKING:  # installed as cascade.stages; mypy reads stages/ as the top-level package (pyproject.toml)
    from stages.biencoder import BiEncoder

BLOCK_ROWS = 65536  # rows copied per step when exporting or compacting


class Adder:
    """Documents added to one part during a write; :meth:`finish` returns the part's new manifest entry."""

    def __init__(self, entry: dict):
        self.entry = entry

    def add(self, texts: list[str], encoded: dict[Any, Encoded]) -> None:
        """Add a chunk of documents (their texts, and the encoder passes the part asked for)."""

    def finish(self, live: np.ndarray) -> dict:
        """The entry of the new generation; ``live`` (bool per row, new rows included) is what stays."""
        return self.entry


class Part:
    """A stage without stored state (its model is loaded when the index opens)."""

    kind = "none"

    def __init__(self, number: int, stage: Stage):
        self.number, self.stage = number, stage

    def files(self, entry: dict) -> list[dict]:
        """Every file spec of the entry (to verify)."""
        return []

    def passes(self) -> dict[Any, DocPass]:
        """The encoder passes added documents need, by pass key (shared with other parts of the same key)."""
        return {}

    def export(self, txn: Txn, corpus: Corpus) -> dict:
        return {"kind": self.kind}

    def attach(self, root: Path, entry: dict, corpus: Corpus) -> None:
        self.stage.load(corpus, [])

    def adder(self, txn: Txn, entry: dict) -> Adder:
        return Adder(entry)

    def compact(self, txn: Txn, entry: dict, keep: np.ndarray) -> dict:
        return entry

    def info(self, entry: dict) -> dict:
        return {}


def copy_rows(txn: Txn, name: str, source: np.ndarray, rows: np.ndarray | None = None) -> dict:
    """A new append-only array ``name`` holding ``source`` (or its ``rows``), copied in blocks."""
    spec = new_spec(name, source.dtype, source.shape[1:])
    app = txn.appender(spec)
    total = len(source) if rows is None else len(rows)
    for s in range(0, total, BLOCK_ROWS):
        app.write(np.asarray(source[s:s + BLOCK_ROWS] if rows is None else source[rows[s:s + BLOCK_ROWS]]))
    return app.finish()


def ranges_rows(offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """The token rows of documents ``docs`` (in order) given per-row ``offsets`` (rows + 1)."""
    starts, ends = offsets[docs], offsets[docs + 1]
    lengths = ends - starts
    total = np.cumsum(lengths)
    return np.arange(int(total[-1]) if len(total) else 0, dtype=np.int64) + np.repeat(starts - (total - lengths),
                                                                                       lengths)


def copy_token_rows(txn: Txn, name: str, source: np.ndarray, offsets: np.ndarray, keep: np.ndarray,
                    budget: int = 1 << 20) -> dict:
    """A new append-only array of the token rows of documents ``keep``, in bounded steps."""
    spec = new_spec(name, source.dtype, source.shape[1:])
    app = txn.appender(spec)
    lengths = offsets[keep + 1] - offsets[keep]
    ends, at = np.cumsum(lengths), 0
    while at < len(keep):
        stop = max(at + 1, int(np.searchsorted(ends, (ends[at - 1] if at else 0) + budget, side="right")))
        app.write(np.asarray(source[ranges_rows(offsets, keep[at:stop])]))
        at = stop
    return app.finish()


def kept_offsets(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Offsets (len(keep) + 1) of documents ``keep`` packed together."""
    return np.concatenate([[0], np.cumsum(offsets[keep + 1] - offsets[keep])]).astype(np.int64)


class DensePart(Part):
    """The bi-encoder's (rows, dim) float32 vectors, append-only."""

    kind = "dense"
    stage: BiEncoder

    def files(self, entry: dict) -> list[dict]:
        return [entry["vectors"]]

    def passes(self) -> dict[Any, DocPass]:
        stage = self.stage
        _, doc_len = stage._lengths()
        doc_pass = stage.encoder.doc_pass(doc_len, stage.doc_prefix, stage.batch_size)
        return {doc_pass.key: doc_pass}

    def export(self, txn: Txn, corpus: Corpus) -> dict:
        vectors = self.stage._vectors
        assert vectors is not None, f"stage {self.stage.name!r} is saved after it was prepared (its vectors loaded)"
        return {"kind": self.kind, "vectors": copy_rows(txn, txn.name(self.number, "vectors", True), vectors)}

    def attach(self, root: Path, entry: dict, corpus: Corpus) -> None:
        self.stage._vectors = open_array(root, entry["vectors"])

    def adder(self, txn: Txn, entry: dict) -> Adder:
        return _DenseAdder(entry, txn, self)

    def compact(self, txn: Txn, entry: dict, keep: np.ndarray) -> dict:
        source = open_array(txn.root, entry["vectors"])
        return {**entry, "vectors": copy_rows(txn, txn.name(self.number, "vectors", True), source, keep)}


class _DenseAdder(Adder):
    def __init__(self, entry: dict, txn: Txn, part: DensePart):
        super().__init__(entry)
        self.txn, self.part = txn, part
        self.app: Appender | None = None
        self.key = next(iter(part.passes()))

    def add(self, texts: list[str], encoded: dict[Any, Encoded]) -> None:
        if self.app is None:  # opened on the first rows: a write that only deletes leaves the file alone
            self.app = self.txn.appender(self.entry["vectors"])
        pooled = encoded[self.key].pooled
        assert pooled is not None, "the bi-encoder's document pass gives pooled vectors"
        self.app.write(self.part.stage._normalize(pooled))

    def finish(self, live: np.ndarray) -> dict:
        return self.entry if self.app is None else {**self.entry, "vectors": self.app.finish()}
