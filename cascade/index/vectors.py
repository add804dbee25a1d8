"""The dense-vector artifact: one (N, D) float32 ``vectors.npy`` per corpus, memory-mapped.

Written (chunk by chunk, then assembled) and read by this module alone.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cascade.core.data import Corpus
from cascade.core.errors import CorruptArtifactError
from cascade.core.files import atomic_save_npy
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index.encoding import EncodedArtifact


class VectorsArtifact(EncodedArtifact):
    """Pooled document vectors of an encoder pass, optionally transformed (e.g. L2-normalized)."""

    kind = "vectors"

    def __init__(self, path: Path, meta: dict, doc_pass: DocPass, chunk_size: int = 256, progress: bool = True,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__(path, meta, doc_pass, chunk_size, progress)
        self.transform = transform

    def save_chunk(self, base: Path, enc: Encoded) -> None:
        assert enc.pooled is not None, "a vectors artifact is built from a pass that gives pooled vectors"
        vectors = enc.pooled if self.transform is None else self.transform(enc.pooled)
        atomic_save_npy(base.with_suffix(".vectors.npy"), np.asarray(vectors, np.float32))

    def assemble(self, out: Path, bases: list[Path], corpus: Corpus) -> dict:
        parts = [np.load(b.with_suffix(".vectors.npy"), mmap_mode="r") for b in bases]
        target = np.lib.format.open_memmap(out / "vectors.npy", "w+", np.float32, (len(corpus), parts[0].shape[1]))
        row = 0
        for part in parts:
            target[row:row + len(part)] = part
            row += len(part)
        target.flush()
        del target
        return {"dim": int(parts[0].shape[1]), "index_bytes": (out / "vectors.npy").stat().st_size}

    def open(self, corpus: Corpus) -> np.ndarray:
        """The (N, D) float32 vectors, memory-mapped."""
        self.checked_meta(corpus)
        vectors = np.load(self.path / "vectors.npy", mmap_mode="r")
        if vectors.ndim != 2 or len(vectors) != len(corpus) or vectors.dtype != np.float32:
            raise CorruptArtifactError(f"the vectors at {self.path} do not match the corpus; delete them and rebuild")
        return vectors
