"""Documents to add to a saved index: ids, texts and metadata from the forms users have them in.

Accepted: a dict ``{id: text}`` or ``{id: {"title", "text", "metadata": {...}}}``; a list of such
objects with an ``_id`` / ``id`` / ``docno`` field; a pandas DataFrame with ``docno`` and ``text``
columns (every other column is metadata; missing values are left out); a BEIR ``corpus.jsonl``
(its rows' ``metadata`` objects are kept); a :class:`~cascade.core.data.Corpus`. ``metadata``
(``{id: {...}}``) adds to what the documents carry. Everything is checked before any work: texts
as a corpus's are, and metadata must be JSON objects of plain values.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from cascade.core.data import Corpus, _doc_text, read_lines
from cascade.core.errors import DataError
from cascade.core.sources import _is_frame, as_id, corpus as as_corpus


class Docs(NamedTuple):
    ids: list[str]
    texts: list[str]
    metas: list[dict]


ID_FIELDS = ("_id", "id", "docno")


def check_meta(value: Any, doc_id: str) -> dict:
    """One document's metadata as stored: a dict of plain JSON values (a DataError naming the document if not)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"document {doc_id!r}: metadata must be a dict of field -> value, got {type(value).__name__}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise DataError(f"document {doc_id!r}: metadata field {key!r} is not a string")
        try:
            out[key] = json.loads(json.dumps(item, allow_nan=False))
        except (TypeError, ValueError):
            raise DataError(f"document {doc_id!r}: metadata field {key!r} holds {item!r}, which is not plain JSON "
                            "(strings, numbers, booleans, null, lists and dicts of those)") from None
    return out


def _rows(rows: Sequence[Mapping], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    texts, metas = {}, {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{where} {i}: expected an object with an id and a text, got {type(row).__name__}")
        key = next((f for f in ID_FIELDS if f in row), None)
        if key is None:
            raise DataError(f"{where} {i}: no id field ({', '.join(ID_FIELDS)})")
        doc_id = as_id(row[key], f"{where} {i}")
        if doc_id in texts:
            raise DataError(f"{where} {i}: document id {doc_id!r} appears twice; every document needs its own id")
        texts[doc_id] = {"title": row.get("title"), "text": row.get("text")}
        metas[doc_id] = row.get("metadata")
    return texts, metas


def _jsonl(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = []
    for lineno, line in read_lines(path):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({err.msg}); fix or remove that line") from None
    if not rows:
        raise DataError(f"{path} holds no documents")
    return _rows(rows, f"{path}, document")


def parse_docs(docs: Any, metadata: Mapping | None = None) -> Docs:
    """The documents of ``docs`` (see the module docstring), checked; a DataError naming any bad entry."""
    metas: dict[str, Any] = {}
    if isinstance(docs, Corpus):
        corpus = docs
    elif isinstance(docs, (str, os.PathLike)):
        path = Path(docs).expanduser()
        if not path.is_file():
            raise DataError(f"documents file {path} does not exist; give a corpus.jsonl (one JSON object per line "
                            "with _id, text, optional title and metadata)")
        found, metas = _jsonl(path)
        corpus = as_corpus({k: _doc_text(v) for k, v in found.items()})
    elif _is_frame(docs):
        corpus = as_corpus(docs)
        extra = [c for c in docs.columns if c not in ("docno", "text")]
        for doc_id, values in zip(corpus.ids, docs[extra].to_dict("records") if extra else [{}] * len(corpus)):
            metas[doc_id] = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
    elif isinstance(docs, Mapping):
        corpus = as_corpus(docs)
        metas = {as_id(k, "documents"): v.get("metadata") for k, v in docs.items() if isinstance(v, Mapping)}
    elif isinstance(docs, Sequence) and not isinstance(docs, (bytes, bytearray)):
        if docs and all(isinstance(d, str) for d in docs):
            raise DataError("documents added to an index need ids: give a dict {id: text}, a list of "
                            "{'_id': ..., 'text': ...} objects, a DataFrame with docno and text, or a corpus.jsonl")
        found, metas = _rows(docs, "document")
        corpus = as_corpus({k: _doc_text(v) for k, v in found.items()})
    else:
        raise DataError(f"cannot read documents from a {type(docs).__name__}; give a dict {{id: text}}, a list of "
                        "objects with _id and text, a DataFrame with docno and text, or a corpus.jsonl path")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise DataError(f"metadata must be a dict {{doc_id: {{field: value}}}}, got {type(metadata).__name__}")
        unknown = [k for k in metadata if as_id(k, "metadata") not in corpus.index_of]
        if unknown:
            raise DataError(f"metadata names documents that are not being added: {', '.join(map(repr, unknown[:5]))}")
        for key, value in metadata.items():
            metas[as_id(key, "metadata")] = {**(check_meta(metas.get(as_id(key, "metadata")), str(key))),
                                             **check_meta(value, str(key))}
    return Docs(list(corpus.ids), list(corpus.texts), [check_meta(metas.get(i), i) for i in corpus.ids])
