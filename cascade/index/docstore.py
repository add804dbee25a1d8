"""The docstore of a saved index: every document's id, text and metadata, read per access.

Six append-only arrays (:mod:`cascade.index.appendable`): ``texts`` (uint8, the UTF-8 bytes of all
texts back to back) with ``text_offsets`` (int64, rows + 1: row ``i`` owns bytes
``offsets[i]:offsets[i + 1]``), and likewise ``ids`` / ``id_offsets`` and ``meta`` / ``meta_offsets``
(one JSON object per document, ``{}`` when it has none). Row ``i`` here is row ``i`` of every stage's
arrays; a deleted document keeps its row (and is masked) until the index is compacted.

:class:`StoredCorpus` is the :class:`~cascade.core.data.Corpus` the stages of a saved index see: its
``texts`` are read from the memory-mapped store when asked for, never loaded whole; ``live`` marks the
rows not deleted, ``index_of`` maps the ids of live documents only, and ``rows_where`` answers
metadata filters. Written and read by this module alone.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.data import Corpus
from cascade.core.errors import CorruptArtifactError, DataError
from cascade.index.appendable import Appender, new_spec, open_array

FIELDS = ("texts", "ids", "meta")  # each with an offsets array: f"{field}_offsets"


def _offsets(field: str) -> str:
    return f"{field[:-1] if field.endswith('s') else field}_offsets"


def meta_json(meta: Mapping | None) -> bytes:
    """The stored form of one document's metadata."""
    return json.dumps(dict(meta or {}), sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")


class DocWriter:
    """Appends documents to the docstore described by ``parts`` (None: a new, empty one)."""

    def __init__(self, root: Path, parts: dict | None, epoch: int):
        fresh = parts is None
        if parts is None:
            parts = {}
            for field in FIELDS:
                parts[field] = new_spec(f"docs.{field}.e{epoch}.npy", np.uint8)
                parts[_offsets(field)] = new_spec(f"docs.{_offsets(field)}.e{epoch}.npy", np.int64)
        self.apps = {name: Appender(root, spec) for name, spec in parts.items()}
        self.ends: dict[str, int] = {}
        for field in FIELDS:
            if fresh:
                self.apps[_offsets(field)].write(np.zeros(1, np.int64))
                self.ends[field] = 0
            else:
                self.ends[field] = int(open_array(root, parts[_offsets(field)])[-1])

    def add(self, ids: Sequence[str], texts: Sequence[str], metas: Sequence[Mapping | None]) -> None:
        for field, items in (("ids", [i.encode("utf-8") for i in ids]), ("texts", [t.encode("utf-8") for t in texts]),
                             ("meta", [meta_json(m) for m in metas])):
            lengths = np.fromiter((len(b) for b in items), np.int64, len(items))
            self.apps[field].write(np.frombuffer(b"".join(items), np.uint8))
            self.apps[_offsets(field)].write(self.ends[field] + np.cumsum(lengths))
            self.ends[field] += int(lengths.sum())

    def finish(self) -> dict:
        return {name: app.finish() for name, app in self.apps.items()}

    def close(self) -> None:
        for app in self.apps.values():
            app.close()


def copy_rows(root: Path, parts: dict, rows: np.ndarray, epoch: int, step: int = 4096) -> tuple[dict, list[Appender]]:
    """A new docstore (files of ``epoch``) holding only ``rows`` of the one in ``parts``, in order."""
    store = DocStore(root, parts)
    writer = DocWriter(root, None, epoch)
    try:
        for s in range(0, len(rows), step):
            block = rows[s:s + step]
            writer.add([store.ids[r] for r in block], [store.text(r) for r in block],
                       [store.meta(r) for r in block])
        return writer.finish(), list(writer.apps.values())
    finally:
        writer.close()


class DocStore:
    """The opened docstore: ids in memory, texts and metadata memory-mapped and decoded per access."""

    def __init__(self, root: Path, parts: dict):
        self.root = Path(root)
        arrays = {name: open_array(root, spec) for name, spec in parts.items()}
        self._texts, self._text_offsets = arrays["texts"], arrays["text_offsets"]
        self._meta, self._meta_offsets = arrays["meta"], arrays["meta_offsets"]
        id_offsets, blob = np.asarray(arrays["id_offsets"]), bytes(arrays["ids"])
        self.rows = len(id_offsets) - 1
        if (self.rows < 0 or len(self._text_offsets) != self.rows + 1 or len(self._meta_offsets) != self.rows + 1
                or id_offsets[-1] != len(blob) or self._text_offsets[-1] != len(self._texts)
                or self._meta_offsets[-1] != len(self._meta)):
            raise CorruptArtifactError(f"saved index {root}: the docstore's arrays do not agree; restore the folder "
                                       "from a copy")
        bounds = id_offsets.tolist()
        self.ids = tuple(blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:]))

    def text(self, row: int) -> str:
        a, b = int(self._text_offsets[row]), int(self._text_offsets[row + 1])
        return bytes(self._texts[a:b]).decode("utf-8")

    def texts(self, start: int, stop: int) -> list[str]:
        """Texts of rows ``start:stop`` in one read."""
        bounds = np.asarray(self._text_offsets[start:stop + 1]).tolist()
        if len(bounds) < 2:
            return []
        blob = bytes(self._texts[bounds[0]:bounds[-1]])
        return [blob[a - bounds[0]:b - bounds[0]].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]

    def meta(self, row: int) -> dict:
        a, b = int(self._meta_offsets[row]), int(self._meta_offsets[row + 1])
        return json.loads(bytes(self._meta[a:b]).decode("utf-8"))


class LazyTexts(Sequence):
    """The texts of a docstore as a read-only sequence, each read when asked for."""

    def __init__(self, store: DocStore):
        self.store = store

    def __len__(self) -> int:
        return self.store.rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self.store.rows)
            if step == 1:
                return self.store.texts(start, max(start, stop))
            return [self.store.text(r) for r in range(start, stop, step)]
        r = int(i) + (self.store.rows if int(i) < 0 else 0)
        if not 0 <= r < self.store.rows:
            raise IndexError(f"text {i} of a corpus of {self.store.rows} documents")
        return self.store.text(r)

    def __iter__(self) -> Iterator[str]:
        for s in range(0, self.store.rows, 4096):
            yield from self.store.texts(s, min(s + 4096, self.store.rows))


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class StoredCorpus(Corpus):
    """A saved index's documents as the :class:`Corpus` its stages search (see the module docstring).

    Rows are the index's rows, deleted ones included (so every stage's arrays are indexed by row as
    they are stored); ``live`` (bool per row, None when nothing is deleted) says which count.
    """

    store: DocStore
    live: np.ndarray | None
    _fingerprint: str
    name: str

    def __init__(self, store: DocStore, live: np.ndarray | None, fingerprint: str, name: str = ""):
        object.__setattr__(self, "ids", store.ids)
        object.__setattr__(self, "texts", LazyTexts(store))
        object.__setattr__(self, "store", store)
        object.__setattr__(self, "live", None if live is None or live.all() else np.asarray(live, bool))
        object.__setattr__(self, "_fingerprint", fingerprint)
        object.__setattr__(self, "name", name)

    @property
    def fingerprint(self) -> str:  # noqa: D401 - the generation's content hash, kept in its manifest
        """The content hash of this generation (rows, their texts and the deletions), from its manifest."""
        return self._fingerprint

    @cached_property
    def index_of(self) -> dict[str, int]:
        """Row of each live document's id."""
        live = self.live
        return {doc_id: i for i, doc_id in enumerate(self.ids) if live is None or live[i]}

    @property
    def num_live(self) -> int:
        return len(self) if self.live is None else int(self.live.sum())

    def meta(self, doc_id: str) -> dict:
        """The metadata of a live document."""
        if doc_id not in self.index_of:
            raise DataError(f"document {doc_id!r} is not in the index")
        return self.store.meta(self.index_of[doc_id])

    @cached_property
    def _columns(self) -> dict[str, dict[str, np.ndarray]]:
        """field -> JSON of a value -> rows having it (every row's metadata parsed once, on first use)."""
        columns: dict[str, dict[str, list[int]]] = {}
        for row in range(len(self)):
            for field, value in self.store.meta(row).items():
                columns.setdefault(field, {}).setdefault(_key(value), []).append(row)
        return {f: {v: np.asarray(rows, np.int64) for v, rows in col.items()} for f, col in columns.items()}

    def rows_where(self, where: Mapping) -> np.ndarray:
        """Rows whose metadata has ``field == value`` (or, for a list, any of its values) for every field."""
        mask = np.ones(len(self), bool)
        for field, wanted in where.items():
            values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            hit = np.zeros(len(self), bool)
            column = self._columns.get(str(field), {})
            for value in values:
                rows = column.get(_key(value))
                if rows is not None:
                    hit[rows] = True
            mask &= hit
        return mask

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"StoredCorpus({self.name or self.store.root}, {len(self)} rows, {self.num_live} live)"
