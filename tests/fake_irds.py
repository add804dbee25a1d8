"""A local stand-in for the ir_datasets package (its ``load`` and dataset objects), so tests never download."""
from __future__ import annotations

import sys
import types
from collections import namedtuple
from typing import Any

from conftest import DOCS, QRELS, QUERIES

Doc = namedtuple("Doc", "doc_id text title")  # as ir_datasets' BeirTitleDoc
Query = namedtuple("Query", "query_id text")
Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")


class FakeDataset:
    """What cascade uses of an ir_datasets dataset: has_*() and *_iter()."""

    def __init__(self, docs=None, queries=None, qrels=None):
        self.docs, self.queries, self.qrels = docs, queries, qrels

    def has_docs(self):
        return self.docs is not None

    def has_queries(self):
        return self.queries is not None

    def has_qrels(self):
        return self.qrels is not None

    def docs_iter(self):
        return iter(self.docs)

    def queries_iter(self):
        return iter(self.queries)

    def qrels_iter(self):
        return iter(self.qrels)


def tiny(extra_queries: dict[str, str] | None = None) -> FakeDataset:
    """The conftest tiny dataset (plus unjudged ``extra_queries``) as ir_datasets would serve it."""
    queries = {**QUERIES, **(extra_queries or {})}
    return FakeDataset([Doc(d, text, title) for d, (title, text) in DOCS.items()],
                       [Query(q, t) for q, t in queries.items()],
                       [Qrel(q, d, r, "0") for q, rels in QRELS.items() for d, r in rels.items()])


def install(monkeypatch, datasets: dict[str, FakeDataset]) -> types.ModuleType:
    """Put a fake ``ir_datasets`` module serving ``datasets`` (by id) into ``sys.modules``."""
    module: Any = types.ModuleType("ir_datasets")  # Any: given the attribute ir_datasets has
    module.load = lambda dataset_id: datasets[dataset_id]  # KeyError for an unknown id, as ir_datasets
    monkeypatch.setitem(sys.modules, "ir_datasets", module)
    return module
