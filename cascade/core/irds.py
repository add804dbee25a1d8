"""ir_datasets collections (``irds:beir/scifact/test``), an optional extra: ``pip install "cascade-rerank[irds]"``.

ir_datasets downloads a collection on first use into its own cache (``$IR_DATASETS_HOME``,
default ``~/.ir_datasets``); cascade reads documents, queries and qrels from it and checks
them as any other source.
"""
from __future__ import annotations

import logging
from typing import Any

from cascade.core.data import Corpus, Dataset, Qrels, _doc_text, _restrict_qrels
from cascade.core.errors import DataError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    'pip install "cascade-rerank[irds]" (from a checkout: pip install -e ".[irds]"; or pip install ir_datasets)'
)


def _load(dataset_id: str) -> Any:
    """The ir_datasets dataset ``dataset_id`` (an ``irds:`` prefix is allowed)."""
    dataset_id = dataset_id.removeprefix("irds:")
    try:
        import ir_datasets
    except ImportError:
        raise DataError(f"the ir_datasets id {dataset_id!r} needs the ir_datasets package, which is not "
                        f"installed: {INSTALL_HINT}") from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(f"{dataset_id!r} is not an ir_datasets id; see https://ir-datasets.com for the list "
                        "(e.g. beir/scifact/test, msmarco-passage/dev/small)") from None


def _has(dataset: Any, what: str, dataset_id: str) -> None:
    if not getattr(dataset, f"has_{what}")():
        raise DataError(f"ir_datasets {dataset_id!r} has no {what}; pick an id that has them "
                        "(a split such as beir/scifact/test has documents, queries and qrels)")


def _doc(doc: Any) -> str:
    """A document's text: ``title text`` as a BEIR folder gives it, else ir_datasets' default text."""
    if hasattr(doc, "title") and hasattr(doc, "text"):
        return _doc_text({"title": doc.title, "text": doc.text})
    return str(doc.default_text() if hasattr(doc, "default_text") else doc.text)


def _query(query: Any) -> str:
    return str(query.default_text() if hasattr(query, "default_text") else query.text)


def irds_corpus(dataset_id: str) -> Corpus:
    """The documents of ir_datasets ``dataset_id`` as a :class:`Corpus`."""
    dataset = _load(dataset_id)
    _has(dataset, "docs", dataset_id)
    ids, texts = [], []
    for doc in dataset.docs_iter():
        ids.append(str(doc.doc_id))
        texts.append(_doc(doc))
    empty = sum(not t.strip() for t in texts)
    if empty and empty < len(texts):
        log.warning("%s: %d of %d documents have no text", dataset_id, empty, len(texts))
    return Corpus(tuple(ids), tuple(texts))


def irds_queries(dataset_id: str) -> dict[str, str]:
    """``{qid: text}`` of ir_datasets ``dataset_id``; a repeated query id is an error."""
    dataset = _load(dataset_id)
    _has(dataset, "queries", dataset_id)
    out: dict[str, str] = {}
    for query in dataset.queries_iter():
        qid = str(query.query_id)
        if qid in out:
            raise DataError(f"ir_datasets {dataset_id!r}: query id {qid!r} appears twice")
        out[qid] = _query(query)
    return out


def irds_qrels(dataset_id: str) -> Qrels:
    """``{qid: {doc_id: relevance}}`` of ir_datasets ``dataset_id``."""
    dataset = _load(dataset_id)
    _has(dataset, "qrels", dataset_id)
    out: Qrels = {}
    for qrel in dataset.qrels_iter():
        out.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
    return out


def load_irds(id: str, name: str | None = None) -> Dataset:  # noqa: A002 - `dataset.id=...` in configs
    """A :class:`Dataset` from ir_datasets ``id`` (e.g. ``beir/scifact/test``): its documents, and
    its judged queries with their qrels, as :func:`cascade.core.data.load_beir` keeps them (all
    its queries when it has no qrels)."""
    dataset = _load(id)
    corpus, queries = irds_corpus(id), irds_queries(id)
    qrels = _restrict_qrels(irds_qrels(id), set(queries), corpus) if dataset.has_qrels() else {}
    ids = [q for q in queries if q in qrels] if dataset.has_qrels() else list(queries)
    if not ids:
        raise DataError(f"ir_datasets {id!r} has no judged query whose judged documents are in its corpus")
    log.info("loaded %s: %d docs, %d queries", id, len(corpus), len(ids))
    return Dataset(corpus, tuple(ids), tuple(queries[q] for q in ids), qrels,
                   name or id.removeprefix("irds:").replace("/", "-"))
