"""SYNTHETIC token vectors as an encoder pass, so the library's own index build can run on them.

:class:`SyntheticPass` generates, for any document id, the token vectors ``synth.py`` would make for
it: the document's length is drawn from SciFact's document lengths, it has a *main* SciFact
document, each of its tokens is with probability ``MAIN_SHARE`` a random token of that document,
else a random token of the whole corpus (the real fp16 MiniLM vectors of the cached SciFact token
index), plus Gaussian noise ``sigma`` per dimension from a bank of ``NOISE_BANK`` rows, renormalized.

The lengths and main documents come from the same random draws as ``synth.build`` (so a corpus of
1M documents has the same 237,600,244 tokens). The per-token draws (source row, noise row) are a
hash of the global token index instead of a sequential stream, so a document's vectors do not
depend on which chunk asks for it (the codec's sample and the pass see the same vectors, and a
resumed build equals an uninterrupted one).

``corpus()`` is a :class:`cascade.Corpus` whose texts are the document numbers; ``doc_pass()`` is
the :class:`cascade.encoders.sentence.DocPass` whose ``encode`` turns those texts into vectors.
"""
from __future__ import annotations

import hashlib
import time
import warnings

import numpy as np
import torch

from cascade.core.data import Corpus
from cascade.encoders.sentence import DocPass, Encoded

SIGMA = 0.0247
MAIN_SHARE = 0.75
NOISE_BANK = 1 << 17
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 keys: independent-looking uint64 per key."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


class SyntheticPass:
    """Synthetic documents 0..size-1 over a SciFact token index (tokens fp16 (T, dim), offsets)."""

    def __init__(self, src: np.ndarray, src_offsets: np.ndarray, size: int, seed: int = 0, sigma: float = SIGMA):
        self.src, self.src_offsets = src, np.asarray(src_offsets, np.int64)
        self.size, self.seed, self.sigma = int(size), int(seed), float(sigma)
        rng = np.random.default_rng(seed + 1)  # as synth.build: the same lengths and main documents
        src_len = np.diff(self.src_offsets)
        self.src_len = src_len
        self.lengths = rng.choice(src_len[src_len > 0], size=size, replace=True).astype(np.int64)
        self.main = rng.choice(np.flatnonzero(src_len > 0), size=size, replace=True)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        gen = torch.Generator().manual_seed(seed + 1)
        self.bank = torch.randn((NOISE_BANK, src.shape[1]), generator=gen).mul_(sigma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only memory: torch warns, we only read
            self._table = torch.from_numpy(np.asarray(src))
        self.seconds = 0.0  # time spent generating, for the build report

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def corpus(self) -> Corpus:
        return Corpus([f"s{i}" for i in range(self.size)], [str(i) for i in range(self.size)])

    def key(self) -> tuple:
        src_id = hashlib.sha256(np.asarray(self.src[:: max(1, len(self.src) // 997)]).tobytes()).hexdigest()[:16]
        return ("synthetic-scifact", src_id, len(self.src), self.size, self.seed, self.sigma, MAIN_SHARE, NOISE_BANK)

    def doc_pass(self) -> DocPass:
        return DocPass(self.key(), self.encode)

    def vectors(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens float32 (sum of lengths, dim), lengths) of the documents ``docs``, in order."""
        docs = np.asarray(docs, np.int64)
        lengths = self.lengths[docs]
        owner = np.repeat(docs, lengths)
        first = np.repeat(self.offsets[docs] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        g = (np.arange(len(owner), dtype=np.int64) + first).astype(np.uint64)  # global token index
        base = np.uint64(self.seed) * np.uint64(0x632BE59BD9B4E019)
        h1, h2 = _splitmix(g ^ base), _splitmix(g ^ base ^ np.uint64(0xD1B54A32D192ED03))
        u_main = (h1 >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        u_row = (h2 >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        main = self.main[owner]
        rows = np.where(u_main < MAIN_SHARE, self.src_offsets[main] + (u_row * self.src_len[main]).astype(np.int64),
                        (u_row * len(self.src)).astype(np.int64))
        noise = (h1 & np.uint64(NOISE_BANK - 1)).astype(np.int64)
        x = self._table.index_select(0, torch.from_numpy(rows)).float()
        x.add_(self.bank.index_select(0, torch.from_numpy(noise)))
        x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True))
        return x.numpy(), lengths

    def encode(self, texts: list[str], on_batch=None) -> Encoded:
        t = time.perf_counter()
        tokens, lengths = self.vectors(np.array([int(s) for s in texts], np.int64))
        self.seconds += time.perf_counter() - t
        if on_batch is not None:
            on_batch(len(texts))
        return Encoded(None, tokens, lengths)
