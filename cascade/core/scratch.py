"""A private, temporary artifact store: what ``rerank(query, docs)`` indexes a list of texts into.

Reranking a plain list of texts runs the stage as over any corpus: its artifacts (vectors, token
indexes, BM25 indexes) are built by :func:`cascade.core.indexing.build_all` and opened by the stage's
``load``. Inside :func:`scratch_cache`, every artifact path resolves under a new temporary folder
(:func:`cascade.index.store.resolve_cache_dir` asks :func:`scratch_dir` first, whatever ``cache_dir``
a stage was given), and the folder is removed when the block ends: nothing reaches the user's cache.
The switch is a context variable, so concurrent calls (threads, asyncio tasks) each get their own.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_scratch: ContextVar[Path | None] = ContextVar("cascade_scratch_cache", default=None)


@contextmanager
def scratch_cache() -> Iterator[Path]:
    """Within the block (this thread or task), artifacts are built and read under a private temporary
    folder (yielded), deleted with everything in it at the end."""
    with tempfile.TemporaryDirectory(prefix="cascade-texts-") as folder:
        token = _scratch.set(Path(folder))
        try:
            yield Path(folder)
        finally:
            _scratch.reset(token)


def scratch_dir() -> Path | None:
    """The private artifact folder of the enclosing :func:`scratch_cache`, None outside one."""
    return _scratch.get()
