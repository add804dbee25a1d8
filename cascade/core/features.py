"""Per-candidate feature columns that stages record beside their scores (for learned fusion).

Recording is off by default, so ordinary runs pay nothing. Inside :func:`record_features` (a
pipeline turns it on when one of its stages ``wants_features``, e.g.
:class:`cascade.stages.ltr.LearnedFusion`; ``fit`` turns it on itself) every stage that scores
adds, for its own ``name``:

- ``<name>.score``: its own score (before fusion), ``<name>.z``: that score z-scored over the
  query's candidates, ``<name>.rank``: its 0-based rank among them (ties share the best rank);
- ``<name>.fused``: the fused score z-scored, when the stage fuses;
- ``doc.length``: the document's length in whitespace words (once, by the first stage);
- whatever the stage's ``extra_features(batch, scores)`` returns (BM25's query-term statistics,
  ColBERT's per-query-token maxima), named ``<name>.<column>``.

Columns live in :attr:`Candidates.features` (Q, K, F), NaN at padding, and travel with ``>>``.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.fusion import _shared_ranks, normalize

_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("cascade_record_features", default=False)
_DOC_LENGTHS: dict[str, np.ndarray] = {}


def recording() -> bool:
    """Whether stages record feature columns now."""
    return _RECORDING.get()


@contextlib.contextmanager
def record_features(on: bool = True) -> Iterator[None]:
    """Stages record feature columns inside this block (``on=False``: leave the current setting)."""
    if not on:
        yield
        return
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def sequence(stage: Any) -> list[Any]:
    """The stages that run one after another in ``stage``: a pipeline's parts, nested pipelines opened
    (a union stays one part); a plain stage is itself."""
    return list(stage.parts())


def wants_features(stages: Any) -> bool:
    """Whether any stage in ``stages`` (or inside them: pipelines, unions) needs feature columns."""
    return any(getattr(s, "wants_features", False) for stage in stages for s in stage.walk())


def doc_lengths(corpus: Any) -> np.ndarray:
    """Whitespace word count of every corpus document (computed once per corpus)."""
    key = corpus.fingerprint
    if key not in _DOC_LENGTHS:
        _DOC_LENGTHS[key] = np.array([len(t.split()) for t in corpus.texts], np.float32)
    return _DOC_LENGTHS[key]


def stage_columns(stage: Any, batch: Batch, cands: Candidates, own: np.ndarray,
                  fused: np.ndarray | None) -> dict[str, np.ndarray]:
    """The columns ``stage`` records for ``cands`` (see the module doc); {} when not recording."""
    if not recording() or not cands.doc_idx.size:
        return {}
    mask = cands.mask
    own = np.where(mask, own, np.nan).astype(np.float32)
    cols: dict[str, np.ndarray] = {}
    if "doc.length" not in cands.feature_names:
        cols["doc.length"] = doc_lengths(batch.corpus)[np.maximum(cands.doc_idx, 0)]
    name = stage.name
    cols[f"{name}.score"] = own
    cols[f"{name}.z"] = normalize(np.nan_to_num(own), mask, "zscore")
    cols[f"{name}.rank"] = _shared_ranks(np.nan_to_num(own), mask).astype(np.float32)
    if fused is not None:
        cols[f"{name}.fused"] = normalize(np.where(mask, fused, 0.0), mask, "zscore")
    extra = getattr(stage, "extra_features", None)
    if callable(extra):
        cols.update({f"{name}.{k}": v for k, v in extra(batch, cands).items()})
    return {k: np.where(mask, v, np.nan).astype(np.float32) for k, v in cols.items()}


def with_columns(stage: Any, batch: Batch, cands: Candidates, own: np.ndarray,
                 fused: np.ndarray | None = None) -> Candidates:
    """``cands`` rescored by ``fused`` (or ``own``), with the columns ``stage`` records added."""
    scores = own if fused is None else fused
    return cands.rescored(scores, stage_columns(stage, batch, cands, own, fused))
