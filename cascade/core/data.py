"""Datasets: BEIR directories and TREC files, loaded into plain id/text lists."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cascade.core.errors import DataError

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, init=False)
class Corpus:
    """Documents by row index: ``ids[i]`` is the string id of the text ``texts[i]``."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]

    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        # any sequences (lists, tuples...), kept as tuples
        object.__setattr__(self, "ids", tuple(ids))
        object.__setattr__(self, "texts", tuple(texts))
        self.__post_init__()

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise DataError(f"corpus has {len(self.ids)} ids but {len(self.texts)} texts")
        if not self.ids:
            raise DataError("the corpus is empty: give a corpus with at least one document")
        if len(set(self.ids)) != len(self.ids):
            dup = _first_repeat(self.ids)
            raise DataError(f"the corpus repeats document id {dup!r}; every document needs its own id")
        if not any(t.strip() for t in self.texts):
            raise DataError(f"every one of the {len(self.texts)} documents is empty; nothing can be ranked - "
                            "check that the corpus file has 'title'/'text' fields")
        _check_encodable(self.texts, "document")

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def fingerprint(self) -> str:
        """A content hash of ids and texts, used to address caches built from this corpus."""
        digest = hashlib.sha256()
        for doc_id, text in zip(self.ids, self.texts):
            digest.update(doc_id.encode())
            digest.update(b"\x00")
            digest.update(text.encode())
            digest.update(b"\x01")
        return digest.hexdigest()[:16]

    @cached_property
    def index_of(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.ids)}


@dataclass(frozen=True, init=False)
class Dataset:
    """A corpus, the queries of one split, and their relevance judgments."""

    corpus: Corpus
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    qrels: Qrels = field(default_factory=dict)
    name: str = "dataset"

    def __init__(self, corpus: Corpus, query_ids: Sequence[str], query_texts: Sequence[str],
                 qrels: Qrels | None = None, name: str = "dataset") -> None:
        # query ids and texts: any sequences, kept as tuples; qrels None: no judgments
        object.__setattr__(self, "corpus", corpus)
        object.__setattr__(self, "query_ids", tuple(query_ids))
        object.__setattr__(self, "query_texts", tuple(query_texts))
        object.__setattr__(self, "qrels", {} if qrels is None else qrels)
        object.__setattr__(self, "name", name)
        self.__post_init__()

    def __post_init__(self) -> None:
        if len(self.query_ids) != len(self.query_texts):
            raise DataError(f"{len(self.query_ids)} query ids but {len(self.query_texts)} query texts")
        if len(set(self.query_ids)) != len(self.query_ids):
            dup = _first_repeat(self.query_ids)
            raise DataError(f"query id {dup!r} appears more than once; every query needs its own id")
        _check_encodable(self.query_texts, "query")

    def subset(self, n_queries: int) -> Dataset:
        """The first ``n_queries`` queries with their qrels, over the same corpus."""
        ids = self.query_ids[:n_queries]
        qrels = {q: self.qrels[q] for q in ids if q in self.qrels}
        return Dataset(self.corpus, ids, self.query_texts[:n_queries], qrels, self.name)


def _first_repeat(items: Sequence[str]) -> str:
    """The first item that occurred earlier in ``items`` (which holds a repeat)."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    raise ValueError("no repeated item")


def _check_encodable(texts, what: str) -> None:
    """Reject text a tokenizer cannot take (e.g. a lone surrogate from a JSON ``\\ud800`` escape)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(f"{what} {i} holds an invalid character ({err.reason} at position {err.start}, "
                            f"{text[max(err.start - 10, 0):err.start]!r}...); remove or fix it") from None


def read_lines(path: Path):
    """``(line number, text)`` of a UTF-8 text file; bad bytes raise a DataError naming file and line."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}, line {lineno}: not valid UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r}); "
                    "re-save the file as UTF-8"
                ) from None
            yield lineno, line


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a JSONL file."""
    rows = []
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({err.msg}); fix or remove that line") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise DataError(f'{path}, line {lineno}: expected an object with an "_id" field')
        for key in ("title", "text"):
            value = row.get(key)
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise DataError(f"{path}, line {lineno}: {key} holds an invalid character (a lone surrogate "
                                    "escape such as \\ud800); fix that line") from None
        rows.append((lineno, row))
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_qrels_tsv(path: Path) -> Qrels:
    """Read qrels in BEIR's TSV (``query-id corpus-id score``, with header) or TREC format."""
    qrels: Qrels = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if not parts or (lineno == 1 and not _is_number(parts[-1])):
            continue  # blank line, or a header such as "query-id corpus-id score" (its last word is no number)
        if len(parts) == 3:
            qid, did, rel = parts
        elif len(parts) == 4:
            qid, _, did, rel = parts
        else:
            raise DataError(f"{path}, line {lineno}: expected 'qid docid rel' or 'qid 0 docid rel'")
        try:
            qrels.setdefault(qid, {})[did] = int(rel)
        except ValueError:
            raise DataError(f"{path}, line {lineno}: relevance {rel!r} is not an integer") from None
    return qrels


def _restrict_qrels(qrels: Qrels, query_ids: set[str], corpus: Corpus) -> Qrels:
    """Drop judgments for unknown queries or documents, warning with counts."""
    bad_q = [q for q in qrels if q not in query_ids]
    bad_d = sum(d not in corpus.index_of for q in qrels if q in query_ids for d in qrels[q])
    if bad_q:
        log.warning("qrels name %d queries not in the queries file; they are not evaluated", len(bad_q))
    if bad_d:
        log.warning("qrels name %d documents not in the corpus; those judgments are dropped", bad_d)
    kept = {q: {d: r for d, r in docs.items() if d in corpus.index_of} for q, docs in qrels.items() if q in query_ids}
    return {q: docs for q, docs in kept.items() if docs}


def _doc_text(row: Mapping) -> str:
    title, text = str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
    return f"{title} {text}".strip()


def load_corpus(path: str | Path) -> Corpus:
    """Load a BEIR ``corpus.jsonl``; title and text are joined by a space."""
    rows = _read_jsonl(Path(path))
    if not rows:
        raise DataError(f"{path} holds no documents; a corpus needs at least one")
    seen: dict[str, int] = {}
    for lineno, row in rows:
        doc_id = str(row["_id"])
        if doc_id in seen:
            raise DataError(f"{path}, line {lineno}: document id {doc_id!r} repeats line {seen[doc_id]}; "
                            "every document needs its own id")
        seen[doc_id] = lineno
    texts = [_doc_text(r) for _, r in rows]
    if not any(t.strip() for t in texts):
        raise DataError(f"{path}: every one of the {len(texts)} documents is empty (no title or text); "
                        "nothing can be ranked - check that its lines have 'title'/'text' fields")
    return Corpus(tuple(str(r["_id"]) for _, r in rows), tuple(texts))


def load_beir(path: str | os.PathLike, split: str = "test", name: str | None = None) -> Dataset:
    """Load a BEIR-layout directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

    Only queries judged in the split are kept, in the order of queries.jsonl.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"dataset directory {root} does not exist; set dataset.path to a BEIR folder "
            "(corpus.jsonl, queries.jsonl, qrels/) or download one with `cascade download scifact DIR`"
        )
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (root / required).is_file():
            raise DataError(f"{root} has no {required}; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DataError(f"split {split!r} has no qrels file {qrels_path}; available splits: {found or 'none'}")
    corpus = load_corpus(root / "corpus.jsonl")
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, row in _read_jsonl(root / "queries.jsonl"):
        qid = str(row["_id"])
        if qid in queries:
            raise DataError(f"{root / 'queries.jsonl'}, line {lineno}: query id {qid!r} appears more than once "
                            f"(first on line {lines[qid]}); every query needs its own id")
        queries[qid], lines[qid] = str(row.get("text") or ""), lineno
    qrels = _restrict_qrels(read_qrels_tsv(qrels_path), set(queries), corpus)
    ids = [q for q in queries if q in qrels]
    log.info("loaded %s: %d docs, %d %s queries", root.name, len(corpus), len(ids), split)
    return Dataset(corpus, tuple(ids), tuple(queries[q] for q in ids), qrels, name or root.name)


def load_trec(corpus: str | Path, topics: str | Path, qrels: str | Path | None = None, name: str = "trec") -> Dataset:
    """Load a corpus (BEIR ``corpus.jsonl``), a topics TSV (``qid<TAB>text``) and TREC qrels."""
    corpus_obj = load_corpus(Path(corpus))
    topics_path = Path(topics)
    if not topics_path.is_file():
        raise DataError(f"topics file {topics_path} does not exist")
    texts: dict[str, str] = {}
    for lineno, line in read_lines(topics_path):
        row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
        if not row:
            continue
        if len(row) < 2:
            raise DataError(f"{topics_path}, line {lineno}: expected 'qid<TAB>query text'")
        if row[0] in texts:
            raise DataError(f"{topics_path}, line {lineno}: query id {row[0]!r} appears more than once")
        texts[row[0]] = row[1]
    judged = _restrict_qrels(read_qrels_tsv(Path(qrels)), set(texts), corpus_obj) if qrels else {}
    ids = [q for q in texts if not qrels or q in judged]
    return Dataset(corpus_obj, tuple(ids), tuple(texts[q] for q in ids), judged, name)
