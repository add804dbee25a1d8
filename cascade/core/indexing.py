"""Planning a pipeline's indexing in one step: ask every stage what it needs, build each shared pass once.

A stage lists the corpus artifacts it needs (:meth:`cascade.core.stage.Stage.artifacts`).
Each :class:`Artifact` says whether it is already built and gives a ``group_key``:
artifacts with equal keys are built together by one call of ``build_group`` (e.g. a
bi-encoder's vectors and a ColBERT token index filled by the same encoder forward
pass). The key is made by the encoder that produces the artifact, never matched by hand.
An optional ``engine`` (e.g. :class:`cascade.index.encoding.LocalEngine` or a Ray engine) is
handed to ``build_group`` untouched: it decides where encoder passes run, not what they make.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cascade.core.data import Corpus

log = logging.getLogger(__name__)


@runtime_checkable
class Artifact(Protocol):
    """One cached thing a stage needs for a corpus."""

    path: Path

    def group_key(self) -> Hashable:
        """Artifacts with equal keys are built together (one shared pass over the corpus)."""

    def is_built(self) -> bool:
        """Whether a finished, undamaged copy exists."""

    def build_group(self, group: Sequence[Artifact], corpus: Corpus, engine: Any = None) -> None:
        """Build every artifact of ``group`` (this one among them) for ``corpus``, passes run by ``engine``."""


def plan(artifacts: Sequence[Artifact]) -> list[list[Artifact]]:
    """The missing artifacts (each path once), grouped by ``group_key`` in first-seen order."""
    groups: dict[Hashable, list[Artifact]] = {}
    seen: set[Path] = set()
    for art in artifacts:
        if art.path in seen or art.is_built():
            continue
        seen.add(art.path)
        groups.setdefault(art.group_key(), []).append(art)
    return list(groups.values())


def build_all(artifacts: Sequence[Artifact], corpus: Corpus, engine: Any = None) -> dict[Path, float]:
    """Build what :func:`plan` finds missing; return the seconds charged to each artifact's path.

    A shared pass's time is split equally between the artifacts it filled. ``engine`` (None:
    each artifact's default, encoding in this process) is passed to ``build_group``.
    """
    seconds: dict[Path, float] = {}
    for group in plan(artifacts):
        start = time.perf_counter()
        if engine is None:
            group[0].build_group(group, corpus)
        else:
            group[0].build_group(group, corpus, engine=engine)
        share = (time.perf_counter() - start) / len(group)
        for art in group:
            seconds[art.path] = share
        if len(group) > 1:
            log.info("one pass over the corpus built %d artifacts: %s", len(group),
                     ", ".join(a.path.parent.name for a in group))
    return seconds
