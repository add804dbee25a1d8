"""Run results: per-query ranked documents, the per-stage trace, and TREC run files."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cascade.core.candidates import Candidates
from cascade.core.data import read_lines
from cascade.core.errors import DataError
from cascade.core.files import atomic_path

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

RunDict = dict[str, dict[str, float]]
TREC_LAYOUTS = "'qid Q0 docid rank score tag', or 5 columns: 'qid Q0 docid rank score' or 'qid docid rank score tag'"


@dataclass(frozen=True)
class StageTrace:
    """What one stage of a pipeline produced and how long it took."""

    name: str
    k: int | None
    candidates: Candidates
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    index_seconds: float = 0.0
    index_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """Ranked candidates with the string ids needed to evaluate or write them."""

    query_ids: tuple[str, ...]
    doc_ids: tuple[str, ...]
    candidates: Candidates
    stages: tuple[StageTrace, ...] = ()

    def to_dict(self, candidates: Candidates | None = None) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}`` for these (or the given) candidates."""
        cands = self.candidates if candidates is None else candidates
        out: dict[str, dict[str, float]] = {}
        for qid, idx, sc in zip(self.query_ids, cands.doc_idx, cands.scores):
            keep = idx >= 0
            out[qid] = {self.doc_ids[i]: float(s) for i, s in zip(idx[keep], sc[keep])}
        return out

    def to_pandas(self, candidates: Candidates | None = None) -> pandas.DataFrame:
        """A PyTerrier-style frame: one row per ranked document, columns ``qid``, ``docno``,
        ``rank`` (from 0 within each query, as PyTerrier counts) and ``score``, best first."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError('Run.to_pandas needs pandas: pip install pandas') from None
        cands = (self.candidates if candidates is None else candidates).topk(None)
        keep = cands.mask
        lengths = keep.sum(axis=1)
        return pd.DataFrame({
            "qid": np.repeat(np.asarray(self.query_ids, dtype=object), lengths),
            "docno": np.asarray(self.doc_ids, dtype=object)[cands.doc_idx[keep]],
            "rank": np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if len(lengths) else
            np.zeros(0, np.int64),
            "score": cands.scores[keep].astype(np.float64),
        })


def write_trec_run(run: Run, path: str | Path, tag: str = "cascade") -> Path:
    """Write ``qid Q0 docid rank score tag`` lines, streamed to a temporary file renamed into place.

    Scores are written at full float32 precision (the shortest text that reads back as the
    same float32), so evaluating the file gives exactly the metrics of the in-memory run.
    """
    cands = run.candidates.topk(None)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        for qid, idx, sc in zip(run.query_ids, cands.doc_idx, cands.scores):
            keep = idx >= 0
            out.writelines(f"{qid} Q0 {run.doc_ids[i]} {rank} {s!s} {tag}\n"
                           for rank, (i, s) in enumerate(zip(idx[keep], sc[keep]), 1))
    return Path(path)


def _parse_trec_run(path: Path) -> Iterator[tuple[int, str, str, float]]:
    """``(line, qid, docid, score)`` of every line of a TREC run file, tab- or space-separated."""
    if not path.is_file():
        raise DataError(f"run file {path} does not exist")
    width, has_q0, seen = None, False, dict[tuple[str, str], int]()
    for lineno, line in read_lines(path):
        text = line.strip()
        if not text:
            continue
        parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
        if width is None and len(parts) in (5, 6):
            width, has_q0 = len(parts), len(parts) == 6 or parts[1].upper() == "Q0"
        if len(parts) != width or "" in parts or (width == 5 and (parts[1].upper() == "Q0") != has_q0):
            raise DataError(f"{path}, line {lineno}: expected {TREC_LAYOUTS}"
                            + (f", as on the file's first line ({width} columns)" if width else "")
                            + f"; got {len(parts)} columns: {text[:80]!r}")
        qid, did, rank, score = (parts[0], parts[2], parts[3], parts[4]) if has_q0 else parts[:4]
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise DataError(f"{path}, line {lineno}: rank {rank!r} must be an integer and score {score!r} a "
                            f"number ({TREC_LAYOUTS})") from None
        if not math.isfinite(value):
            raise DataError(f"{path}, line {lineno}: score {score!r} is not a finite number")
        if (qid, did) in seen:
            raise DataError(f"{path}, line {lineno}: document {did!r} is ranked twice for query {qid!r} "
                            f"(also on line {seen[qid, did]}); a run ranks each document once per query")
        seen[qid, did] = lineno
        yield lineno, qid, did, value
    if width is None:
        raise DataError(f"run file {path} holds no ranked documents")


def read_run(path: str | os.PathLike) -> RunDict:
    """Read a TREC run file, without a corpus, as ``{qid: {docid: score}}`` (scores at full precision).

    Lines are ``qid Q0 docid rank score tag``, tab- or space-separated; a 5-column file without
    the ``Q0`` or the tag column is read too. A malformed line is a :class:`DataError` naming it.
    """
    ranked: RunDict = {}
    for _, qid, did, score in _parse_trec_run(Path(path)):
        ranked.setdefault(qid, {})[did] = score
    return ranked


def read_trec_run(path: str | Path, doc_ids: tuple[str, ...] | None = None,
                  query_ids: tuple[str, ...] | None = None) -> Run:
    """Read a TREC run file into a :class:`Run`.

    Without ``doc_ids`` the run's documents are those the file names (no corpus needed). With
    them (a corpus's ids), candidates index that corpus and a document outside it is an error.
    ``query_ids`` fixes the queries and their order (a query absent from the file retrieved nothing).
    """
    path = Path(path)
    rows: dict[str, tuple[list[int], list[float]]] = {}
    index_of = {d: i for i, d in enumerate(doc_ids)} if doc_ids is not None else {}
    for lineno, qid, did, score in _parse_trec_run(path):
        if did not in index_of:
            if doc_ids is not None:
                raise DataError(f"{path}, line {lineno}: document {did!r} is not in the corpus; read the file "
                                "without doc_ids to keep every document it names")
            index_of[did] = len(index_of)
        idx, scores = rows.setdefault(qid, ([], []))
        idx.append(index_of[did])
        scores.append(score)
    _warn_float32_ties(path, rows)
    qids = tuple(query_ids) if query_ids is not None else tuple(rows)
    empty: tuple[list[int], list[float]] = ([], [])
    cands = Candidates.from_lists([rows.get(q, empty)[0] for q in qids], [rows.get(q, empty)[1] for q in qids])
    return Run(qids, tuple(doc_ids) if doc_ids is not None else tuple(index_of), cands.topk(None))


def _warn_float32_ties(path: Path, rows: dict[str, tuple[list[int], list[float]]]) -> None:
    """A Run holds float32 scores: say so when that turns distinct scores of a query into ties."""
    tied = sum(len(set(sc)) != len(set(np.asarray(sc, np.float32).tolist())) for _, sc in rows.values())
    if tied:
        log.warning("%s: %d queries have scores that differ by less than float32 precision and tie in the "
                    "Run; evaluate the file itself (cascade.evaluate(path, qrels)) to keep their order", path, tied)
