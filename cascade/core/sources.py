"""Data from anywhere: corpora, queries, qrels and runs from lists, dicts, DataFrames, files or ir_datasets.

Every source is checked before any work: ids of any integer or string type become strings,
and a duplicate id, an empty or non-string text, or a missing column is a :class:`DataError`
naming it::

    import cascade
    ds = cascade.dataset(["Cats purr.", "Dogs bark."], {"q1": "purring cats"}, {"q1": {"0": 1}})
    ds = cascade.dataset(docs_df, topics_df, qrels_df)   # PyTerrier columns docno/text, qid/query, qid/docno/label
    ds = cascade.load_dataset("irds:beir/scifact/test")  # or a BEIR folder
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.data import Corpus, Dataset, Qrels, _doc_text, _restrict_qrels, load_beir, load_corpus, read_qrels_tsv
from cascade.core.errors import DataError

IRDS_PREFIX = "irds:"
_FORMS = {
    "corpus": "a list of texts, a dict {doc_id: text}, a DataFrame with docno and text columns, a BEIR folder "
              "or corpus.jsonl, or 'irds:<ir_datasets id>'",
    "queries": "a list of texts, a dict {qid: text}, a DataFrame with qid and query columns, or 'irds:<id>'",
    "qrels": "a dict {qid: {doc_id: relevance}}, a DataFrame with qid, docno and label columns, a qrels file "
             "(TREC or BEIR TSV), or 'irds:<id>'",
    "run": "a dict {qid: {doc_id: score}} or a DataFrame with qid, docno and score columns",
}


def as_id(value: Any, where: str) -> str:
    """``value`` (a str or any integer type) as a string id; anything else is a DataError."""
    if isinstance(value, str):
        text = str(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        text = str(int(value))
    else:
        raise DataError(f"{where}: id {value!r} is a {type(value).__name__}; ids must be strings or integers "
                        "(a float id such as 1.0 would never match '1' in the qrels)")
    if not text or any(ch.isspace() for ch in text):
        raise DataError(f"{where}: id {text!r} is empty or holds whitespace; TREC files separate columns by "
                        "whitespace, so ids cannot contain any")
    return text


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        hint = " (NaN: a missing value?)" if isinstance(value, float) and math.isnan(value) else ""
        raise DataError(f"{where}: the text is a {type(value).__name__}{hint}, not a string")
    if not value.strip():
        raise DataError(f"{where}: the text is empty; remove that entry or give it text")
    return str(value)


def _is_frame(source: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame exists only if pandas was imported
    return pandas is not None and isinstance(source, pandas.DataFrame)


def _columns(frame: Any, names: tuple[str, ...], what: str) -> list[tuple]:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"the {what} DataFrame has no {' or '.join(missing)} column (it has "
                        f"{', '.join(map(str, frame.columns)) or 'none'}); give it columns {', '.join(names)}")
    return list(zip(*(frame[c].tolist() for c in names)))


def _pairs(source: Any, what: str, columns: tuple[str, str]) -> list[tuple[Any, Any]]:
    """``(id, value)`` pairs of a list/tuple/array (ids 0, 1, ...), a dict, or a DataFrame."""
    if _is_frame(source):
        return _columns(source, columns, what)
    if isinstance(source, Mapping):
        return list(source.items())
    if isinstance(source, (list, tuple)) or (isinstance(source, np.ndarray) and source.ndim == 1):
        return list(enumerate(source.tolist() if isinstance(source, np.ndarray) else source))
    raise DataError(f"cannot read {what} from a {type(source).__name__}; give {_FORMS[what]}")


def _unique(pairs: list[tuple[Any, Any]], what: str, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first: dict[str, int] = {}
    for i, (key, value) in enumerate(pairs):
        key = as_id(key, f"{what} entry {i}")
        if key in out:
            raise DataError(f"{what}: {label} id {key!r} appears twice (entries {first[key]} and {i}); "
                            f"every {label} needs its own id")
        out[key], first[key] = value, i
    if not out:
        raise DataError(f"the {what} source holds no {label}; give at least one")
    return out


def _irds_id(source: Any) -> str | None:
    return source[len(IRDS_PREFIX):] if isinstance(source, str) and source.startswith(IRDS_PREFIX) else None


def corpus(source: Any) -> Corpus:
    """A :class:`Corpus` from any of: a list of texts (ids ``"0"``, ``"1"``, ...), a dict
    ``{doc_id: text}`` (or ``{doc_id: {"title": ..., "text": ...}}`` as BEIR's loader gives), a
    DataFrame with ``docno`` and ``text`` columns, a BEIR folder or ``corpus.jsonl``, or ``"irds:<id>"``."""
    if isinstance(source, Corpus):
        return source
    if (irds_id := _irds_id(source)) is not None:
        from cascade.core.irds import irds_corpus

        return irds_corpus(irds_id)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            return load_corpus(path / "corpus.jsonl")
        if path.is_file():
            return load_corpus(path)
        raise DataError(f"corpus {str(source)!r} is neither a BEIR folder nor a corpus.jsonl file; "
                        f"give {_FORMS['corpus']}")
    docs = _unique(_pairs(source, "corpus", ("docno", "text")), "corpus", "document")
    texts = [_doc_text(v) if isinstance(v, Mapping) else v for v in docs.values()]
    return Corpus(tuple(docs), tuple(_text(t, f"corpus: document {d!r}") for d, t in zip(docs, texts)))


def queries(source: Any) -> dict[str, str]:
    """``{qid: text}`` in order from a list of texts (ids ``"0"``, ``"1"``, ...), a dict, a DataFrame
    with ``qid`` and ``query`` columns, or ``"irds:<id>"``."""
    if isinstance(source, Dataset):
        return dict(zip(source.query_ids, source.query_texts))
    if (irds_id := _irds_id(source)) is not None:
        from cascade.core.irds import irds_queries

        return irds_queries(irds_id)
    if isinstance(source, str):
        raise DataError(f"queries: got one string {source[:40]!r}; give {_FORMS['queries']}, "
                        "e.g. [\"a question\"]")
    found = _unique(_pairs(source, "queries", ("qid", "query")), "queries", "query")
    return {q: _text(t, f"queries: query {q!r}") for q, t in found.items()}


def _label(value: Any, where: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise DataError(f"{where}: relevance {value!r} is not an integer")


def qrels(source: Any) -> Qrels:
    """``{qid: {doc_id: relevance}}`` from such a dict, a DataFrame with ``qid``, ``docno`` and
    ``label`` columns (PyTerrier), a qrels file (TREC or BEIR TSV), ``"irds:<id>"``, or None (none)."""
    if source is None:
        return {}
    if (irds_id := _irds_id(source)) is not None:
        from cascade.core.irds import irds_qrels

        return irds_qrels(irds_id)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"qrels file {path} does not exist")
        return read_qrels_tsv(path)
    if _is_frame(source):
        return _frame_nested(source, ("qid", "docno", "label"), "qrels", "judges", _label)
    if not isinstance(source, Mapping):
        raise DataError(f"cannot read qrels from a {type(source).__name__}; give {_FORMS['qrels']}")
    return {q: {d: _label(r, f"qrels of query {q!r}, document {d!r}") for d, r in docs.items()}
            for q, docs in _nested(source, "qrels").items()}


def _frame_nested(frame: Any, columns: tuple[str, str, str], what: str, verb: str,
                  convert: Any) -> dict[str, dict[str, Any]]:
    """``{qid: {docno: convert(value)}}`` from a DataFrame's three ``columns``; a pair seen twice is an error."""
    out: dict[str, dict[str, Any]] = {}
    for i, (q, d, value) in enumerate(_columns(frame, columns, what)):
        q, d = as_id(q, f"{what} row {i}"), as_id(d, f"{what} row {i}")
        if d in out.get(q, {}):
            raise DataError(f"{what} row {i}: query {q!r} {verb} document {d!r} twice")
        out.setdefault(q, {})[d] = convert(value, f"{what} row {i}")
    return out


def _nested(source: Mapping, what: str) -> dict[str, dict[str, Any]]:
    """``{qid: {doc_id: value}}`` with string ids; two keys that become one id are an error."""
    out: dict[str, dict[str, Any]] = {}
    for q, docs in source.items():
        qid = as_id(q, what)
        if qid in out:
            raise DataError(f"{what}: query id {qid!r} appears twice (as {q!r} and as another key)")
        if not isinstance(docs, Mapping):
            raise DataError(f"{what} of query {qid!r}: expected a dict {{doc_id: value}}, got a {type(docs).__name__}")
        inner = out[qid] = {}
        for d, value in docs.items():
            did = as_id(d, f"{what} of query {qid!r}")
            if did in inner:
                raise DataError(f"{what} of query {qid!r}: document id {did!r} appears twice")
            inner[did] = value
    return out


def _score(value: Any, where: str) -> float:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)):
        raise DataError(f"{where}: score {value!r} is not a finite number")
    return float(value)


def run_dict(source: Any) -> dict[str, dict[str, float]]:
    """A checked ``{qid: {doc_id: score}}`` from such a dict or a DataFrame with ``qid``, ``docno``
    and ``score`` columns (a PyTerrier result frame)."""
    if isinstance(source, Mapping):
        return {q: {d: _score(s, f"run query {q!r}, document {d!r}") for d, s in docs.items()}
                for q, docs in _nested(source, "run").items()}
    if not _is_frame(source):
        raise DataError(f"cannot read a run from a {type(source).__name__}; give {_FORMS['run']}")
    return _frame_nested(source, ("qid", "docno", "score"), "run", "ranks", _score)


def dataset(corpus: Any, queries: Any, qrels: Any = None, name: str = "dataset") -> Dataset:
    """A :class:`Dataset` from a corpus, queries and optional qrels, each in any form that
    :func:`corpus`, :func:`queries` and :func:`qrels` read. Every query is kept; judgments of
    unknown queries or documents are dropped with a warning (an error when none is left)."""
    docs, topics, judged = _corpus(corpus), _queries(queries), _qrels(qrels)
    kept = _restrict_qrels(judged, set(topics), docs)
    if judged and not kept:
        q, d = next((q, next(iter(ds), None)) for q, ds in judged.items())
        raise DataError(f"no judgment in the qrels names both a query and a document of this dataset (qrels name "
                        f"e.g. query {q!r}, document {d!r}; queries are e.g. {next(iter(topics))!r}, documents "
                        f"e.g. {docs.ids[0]!r}); check that the ids match")
    return Dataset(docs, tuple(topics), tuple(topics.values()), kept, name)


_corpus, _queries, _qrels = corpus, queries, qrels  # dataset()'s parameters shadow the public names


def load_dataset(source: Any, split: str = "test", name: str | None = None) -> Dataset:
    """A :class:`Dataset` from a BEIR folder (with ``split``) or ``"irds:<id>"``, e.g.
    ``load_dataset("irds:beir/scifact/test")``; a Dataset is returned as is."""
    if isinstance(source, Dataset):
        return source
    if (irds_id := _irds_id(source)) is not None:
        from cascade.core.irds import load_irds

        return load_irds(irds_id, name)
    if isinstance(source, (str, os.PathLike)):
        return load_beir(source, split, name)
    raise DataError(f"load_dataset takes a BEIR folder or 'irds:<id>', got a {type(source).__name__}; for "
                    "in-memory data use cascade.dataset(corpus, queries, qrels)")
