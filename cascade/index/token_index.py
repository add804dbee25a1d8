"""The token-index artifact: every document's token vectors (float16) in one (T, dim) array.

``offsets`` (N + 1, int64) says document ``i`` owns rows ``offsets[i]:offsets[i + 1]``.
Both are plain ``.npy`` files next to a ``meta.json``, loaded with ``mmap_mode="r"`` so
only the rows a query touches are read. Written and read by this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.core.data import Corpus
from cascade.core.errors import CorruptArtifactError
from cascade.core.files import atomic_save_npy
from cascade.encoders.sentence import Encoded
from cascade.index.encoding import EncodedArtifact


@dataclass(frozen=True)
class TokenIndex:
    """Token vectors of a corpus: ``tokens`` (T, dim) float16 and ``offsets`` (N + 1,) int64."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: dict

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        """Token vectors of document ``i``."""
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def info(self) -> dict:
        """Index size: total bytes and bytes per token."""
        nbytes = int(self.tokens.nbytes + self.offsets.nbytes)
        return {"index_bytes": nbytes, "bytes_per_token": nbytes / max(len(self.tokens), 1)}


def save_token_chunk(base: Path, enc: Encoded) -> None:
    """Save one chunk of packed token vectors (float16) and per-document lengths."""
    atomic_save_npy(base.with_suffix(".tokens.npy"), np.asarray(enc.tokens, np.float16))
    atomic_save_npy(base.with_suffix(".lengths.npy"), np.asarray(enc.lengths, np.int64))


def iter_token_chunks(bases: list[Path]):
    """``(tokens float16 memmap, lengths)`` of each saved chunk, in order."""
    for base in bases:
        yield np.load(base.with_suffix(".tokens.npy"), mmap_mode="r"), np.load(base.with_suffix(".lengths.npy"))


class TokenIndexArtifact(EncodedArtifact):
    """A float16 token index filled by an encoder pass (see the module docstring)."""

    kind = "tokens"

    def save_chunk(self, base: Path, enc: Encoded) -> None:
        save_token_chunk(base, enc)

    def assemble(self, out: Path, bases: list[Path], corpus: Corpus) -> dict:
        lengths = np.concatenate([np.load(b.with_suffix(".lengths.npy")) for b in bases])
        dim = int(np.load(bases[0].with_suffix(".tokens.npy"), mmap_mode="r").shape[1])
        target = np.lib.format.open_memmap(out / "tokens.npy", "w+", np.float16, (int(lengths.sum()), dim))
        row = 0
        for part, _ in iter_token_chunks(bases):
            target[row:row + len(part)] = part
            row += len(part)
        target.flush()
        del target
        np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        return {"dim": dim, "num_tokens": int(lengths.sum())}

    def open(self, corpus: Corpus) -> TokenIndex:
        meta = self.checked_meta(corpus)
        tokens = np.load(self.path / "tokens.npy", mmap_mode="r")
        offsets = np.load(self.path / "offsets.npy")
        if len(offsets) != len(corpus) + 1 or offsets[-1] != len(tokens) or tokens.ndim != 2:
            raise CorruptArtifactError(f"the token index at {self.path} is inconsistent (offsets vs tokens); "
                                       "delete it and rebuild")
        return TokenIndex(tokens, offsets, meta)
