"""Bounded-memory building blocks of the compressed index: the codec's sample, assembly, phase clock.

Owned by :mod:`cascade.index.residual_index` (the format's one module): these helpers sample its
training tokens and write its files from the saved chunks without holding anything corpus-sized.

* :func:`codec_sample` draws the codec's training tokens into one preallocated float16 array,
  from a cached fp16 token index or by encoding random documents chunk by chunk.
* :func:`concat_npy` appends the chunks' ``.npy`` payloads into one ``.npy`` with plain file
  copies (``os.copy_file_range``): no memory map, so no dirty pages count in the builder's RSS.
* :func:`write_ivf` builds the inverted lists (centroid -> sorted unique documents, as
  :func:`cascade.kernels.plaid.build_ivf`) in two passes: every chunk's unique (code, doc) keys go
  to a scratch file while the pairs per centroid are counted; then the centroids are cut into
  ranges of at most ``budget`` bytes of keys, and each range is read back, sorted and written.
  Memory: one chunk's codes plus one range (``IVF_BUDGET_BYTES``, or one centroid's list if longer).
* :class:`PhaseClock` records wall and CPU seconds and the peak RSS reached, per named phase.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Bytes of int64 (code, doc) keys sorted at once when building the IVF.
IVF_BUDGET_BYTES = 256 << 20
# int64 keys read back per step of the IVF's second pass.
READ_KEYS = 1 << 22


def codec_sample(corpus, doc_pass, source, size_for: Callable[[int, int], int], chunk_size: int, seed: int,
                 progress: bool) -> tuple[np.ndarray, int]:
    """(float16 (n, dim) random token vectors of ``corpus``, its token count (estimated when encoding)).

    ``source``: an opened fp16 :class:`~cascade.index.token_index.TokenIndex` of the same pass (rows
    drawn at random), or None: random documents are encoded through ``doc_pass`` ``chunk_size`` at a
    time until the sample is full. ``size_for(total_tokens, dim)`` says how many tokens to keep.
    """
    rng = np.random.default_rng(seed)
    if source is not None:
        total = len(source.tokens)
        rows = np.sort(rng.choice(total, size=size_for(total, source.tokens.shape[1]), replace=False))
        return np.asarray(source.tokens[rows], np.float16), total
    order = rng.permutation(len(corpus))
    probe = order[: min(64, len(corpus))]
    tokens = doc_pass.encode([corpus.texts[i] for i in probe], None).tokens
    per_doc = max(len(tokens) / max(len(probe), 1), 1.0)
    total = int(per_doc * len(corpus))
    need = size_for(total, tokens.shape[1])
    sample, filled, at = np.empty((need, tokens.shape[1]), np.float16), 0, len(probe)
    log.info("encoding a sample of ~%d documents to train the codec", int(np.ceil(need / per_doc)))
    with tqdm(total=need, desc="encoding the codec's sample", unit="tok", unit_scale=True, disable=not progress,
              leave=False) as bar:
        while True:
            take = min(len(tokens), need - filled)
            sample[filled:filled + take] = tokens[:take]
            filled += take
            bar.update(take)
            if filled >= need or at >= len(corpus):
                break
            docs = order[at:at + chunk_size]
            at += len(docs)
            tokens = doc_pass.encode([corpus.texts[i] for i in docs], None).tokens
    return sample[:filled], total


def _payload(path: Path) -> tuple[int, tuple, np.dtype]:
    """(data offset, shape, dtype) of a C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered")
        return f.tell(), shape, dtype


def new_npy(path: Path, dtype: DTypeLike, shape: tuple) -> int:
    """Write the header of a C-ordered ``.npy`` of ``shape``; return its size (where the data starts)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": tuple(shape)})
        return f.tell()


def _copy(src, dst, offset: int, count: int) -> None:
    """Append ``count`` bytes of ``src`` from ``offset`` to ``dst`` (unbuffered), kernel-side when possible."""
    try:
        while count > 0:
            done = os.copy_file_range(src.fileno(), dst.fileno(), count, offset)
            if done <= 0:
                break
            offset, count = offset + done, count - done
    except (AttributeError, OSError):  # no copy_file_range here: copy through a small buffer
        pass
    src.seek(offset)
    while count > 0:
        data = src.read(min(count, 1 << 20))
        if not data:
            raise OSError(f"{src.name} ended {count} bytes early")
        dst.write(data)
        count -= len(data)


def concat_npy(out: Path, parts: list[Path], dtype: DTypeLike) -> tuple:
    """Concatenate the ``.npy`` files ``parts`` (same dtype and row shape) along axis 0 into ``out``."""
    heads = [_payload(p) for p in parts]
    rows = sum(shape[0] for _, shape, _ in heads)
    inner = heads[0][1][1:] if heads else ()
    for p, (_, shape, dt) in zip(parts, heads):
        if dt != np.dtype(dtype) or shape[1:] != inner:
            raise ValueError(f"{p}: {dt} {shape} does not match {np.dtype(dtype)} (n, *{inner})")
    new_npy(out, dtype, (rows, *inner))
    with open(out, "ab", buffering=0) as dst:
        for p, (offset, shape, dt) in zip(parts, heads):
            with open(p, "rb") as src:
                _copy(src, dst, offset, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
    return (rows, *inner)


def write_offsets(out: Path, lengths: Iterable[np.ndarray], num_docs: int) -> int:
    """Write ``offsets.npy`` ((N + 1,) int64) from per-chunk document lengths; returns the token count."""
    total = 0
    new_npy(out, np.int64, (num_docs + 1,))
    with open(out, "ab") as f:
        f.write(np.zeros(1, np.int64).tobytes())
        for part in lengths:
            ends = total + np.cumsum(np.asarray(part, np.int64))
            f.write(ends.tobytes())
            total = int(ends[-1]) if len(ends) else total
    return total


def write_ivf(out_dir: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray]], num_docs: int, num_centroids: int,
              scratch: Path, budget: int = IVF_BUDGET_BYTES) -> int:
    """Write ``ivf_docs.npy`` (int32) and ``ivf_offsets.npy`` ((C + 1,) int64); returns the pair count.

    chunks: per saved chunk, (codes of its tokens, its documents' lengths), in document order.
    ``scratch``: a file for the keys (deleted after). See the module docstring.
    """
    counts = np.zeros(num_centroids, np.int64)
    doc0, n = 0, max(num_docs, 1)
    with open(scratch, "wb") as f:
        for codes, lengths in chunks:
            docs = np.repeat(np.arange(doc0, doc0 + len(lengths), dtype=np.int64), lengths)
            keys = np.unique(np.asarray(codes, np.int64) * n + docs)
            counts += np.bincount(keys // n, minlength=num_centroids)
            f.write(keys.tobytes())
            doc0 += len(lengths)
    ivf_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(ivf_offsets[-1])
    per_range = max(1, budget // 8)
    header = new_npy(out_dir / "ivf_docs.npy", np.int32, (total,))
    try:
        with open(out_dir / "ivf_docs.npy", "ab") as dst, open(scratch, "rb") as src:
            lo = 0
            while lo < num_centroids:
                hi = max(lo + 1, int(np.searchsorted(ivf_offsets, ivf_offsets[lo] + per_range, side="right")) - 1)
                hi = min(hi, num_centroids)
                want = int(ivf_offsets[hi] - ivf_offsets[lo])
                if want:
                    part, at = np.empty(want, np.int64), 0
                    src.seek(0)
                    while block := src.read(READ_KEYS * 8):
                        keys = np.frombuffer(block, np.int64)
                        keys = keys[(keys >= lo * n) & (keys < hi * n)]
                        part[at:at + len(keys)] = keys
                        at += len(keys)
                    part.sort()
                    dst.write((part % n).astype(np.int32).tobytes())
                lo = hi
        if (out_dir / "ivf_docs.npy").stat().st_size != header + 4 * total:
            raise RuntimeError("the IVF's keys changed while it was being built")
    finally:
        scratch.unlink(missing_ok=True)
    np.save(out_dir / "ivf_offsets.npy", ivf_offsets)
    return total


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhaseClock:
    """Wall and CPU seconds per named phase (accumulated over repeats), and the peak RSS after each."""

    def __init__(self) -> None:
        self.phases: dict[str, dict] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            entry = self.phases.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - wall, 3)
            entry["cpu_s"] = round(entry["cpu_s"] + time.process_time() - cpu, 3)
            entry["peak_rss_mib"] = round(peak_rss_mib(), 1)

    def report(self) -> dict:
        return {name: dict(entry) for name, entry in self.phases.items()}
