"""Cached corpus artifacts, memory-mapped: pooled document vectors and the token index.

The token index holds every document's token vectors (float16) in one contiguous
``(T, dim)`` array; ``offsets`` (N + 1, int64) says document ``i`` owns rows
``offsets[i]:offsets[i + 1]``. Both are plain ``.npy`` files next to a
``meta.json``, loaded with ``mmap_mode="r"`` so only the rows a query touches
are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.cache import is_complete, read_meta
from cascade.errors import CascadeError


def _check(path: Path, corpus_fingerprint: str, num_docs: int) -> dict:
    if not is_complete(path):
        raise CascadeError(f"no finished index at {path}; build it first (Stage.prepare(corpus))")
    meta = read_meta(path)
    if meta.get("corpus") != corpus_fingerprint or meta.get("num_docs") != num_docs:
        raise CascadeError(f"the index at {path} was built for another corpus; delete it and rebuild")
    return meta


@dataclass(frozen=True)
class TokenIndex:
    """Token vectors of a corpus: ``tokens`` (T, dim) float16 and ``offsets`` (N + 1,) int64."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: dict

    @classmethod
    def load(cls, path: Path, corpus_fingerprint: str, num_docs: int) -> "TokenIndex":
        meta = _check(path, corpus_fingerprint, num_docs)
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        offsets = np.load(path / "offsets.npy")
        if len(offsets) != num_docs + 1 or offsets[-1] != len(tokens):
            raise CascadeError(f"the token index at {path} is inconsistent (offsets vs tokens); delete it and rebuild")
        return cls(tokens, offsets, meta)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        """Token vectors of document ``i``."""
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])


def load_vectors(path: Path, corpus_fingerprint: str, num_docs: int) -> np.ndarray:
    """The (N, D) float32 document vectors at ``path``, memory-mapped."""
    _check(path, corpus_fingerprint, num_docs)
    vectors = np.load(path / "vectors.npy", mmap_mode="r")
    if len(vectors) != num_docs:
        raise CascadeError(f"the vectors at {path} do not match the corpus; delete them and rebuild")
    return vectors
