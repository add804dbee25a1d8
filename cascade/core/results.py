"""Run results: per-query ranked documents, the per-stage trace, and TREC run files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cascade.core.candidates import Candidates
from cascade.core.errors import DataError
from cascade.core.files import atomic_path


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


def read_trec_run(path: str | Path, doc_ids: tuple[str, ...], query_ids: tuple[str, ...] | None = None) -> Run:
    """Read a TREC run file into a :class:`Run` over a corpus whose ids are ``doc_ids``."""
    path = Path(path)
    index_of = {d: i for i, d in enumerate(doc_ids)}
    rows: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}, line {lineno}: expected 'qid Q0 docid rank score tag'")
            qid, _, did, _, score, _ = parts
            if did not in index_of:
                raise DataError(f"{path}, line {lineno}: document {did!r} is not in the corpus")
            idx, scores = rows.setdefault(qid, ([], []))
            idx.append(index_of[did])
            scores.append(float(score))
    qids = tuple(query_ids) if query_ids is not None else tuple(rows)
    empty: tuple[list[int], list[float]] = ([], [])
    cands = Candidates.from_lists([rows.get(q, empty)[0] for q in qids], [rows.get(q, empty)[1] for q in qids])
    return Run(qids, tuple(doc_ids), cands.topk(None))
