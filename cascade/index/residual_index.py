"""The compressed token index: ColBERTv2 residual compression plus PLAID's inverted lists.

Every token is stored as its nearest centroid's id (``codes``, uint16 when there are at most
65,536 centroids, else int32) and its residual quantized to ``nbits`` per dimension,
bit-packed (``residuals``, uint8, dim * nbits / 8 bytes), plus ``norm_deltas`` (float16,
``1 / ||centroid + residual|| - 1``) so that MaxSim scores tokens without decompressing them
(:meth:`ResidualCodec.scorer`). ``ivf_docs`` / ``ivf_offsets`` list,
for each centroid, the documents having a token assigned to it (PLAID's candidate generation).

The build streams: the codec (centroids by faiss k-means, bucket cutoffs and weights) is
trained on a bounded sample of token vectors before the pass; then every chunk of the pass
is compressed as it is encoded, so neither the fp16 nor the fp32 vectors of the whole corpus
are ever held or written. The sample comes from an already built fp16 token index of the same
encoder pass when there is one (no extra encoding), else from encoding a random sample of
documents. Written and read by this module alone.

The centroids are float16, in the index and in the k-means cache (``colbert_centroids``), and the
codec computes everything against those rounded values. ``assignment`` (``auto``, ``exact``,
``coarse``; :mod:`cascade.kernels.assign`) chooses how tokens find their centroid and, with
``coarse``, the two-level k-means (:mod:`cascade.kernels.kmeans`); it is part of the meta, hence
of both cache keys.

Memory (:mod:`cascade.index.residual_build`): the build holds at most the sample (float16, capped
at ``SAMPLE_MAX_BYTES``), one chunk of the pass, the codec, and while assembling one chunk's codes
plus ``IVF_BUDGET_BYTES`` of keys; the per-document arrays (lengths, offsets) are streamed to disk.
Phases (sample, kmeans, buckets, assign, compress, save, assemble, ivf) are timed into the meta's
``build_phases`` (wall and CPU seconds, peak RSS after each).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cascade.core.data import Corpus
from cascade.core.errors import ConfigError, CorruptArtifactError
from cascade.core.files import atomic_save_npy
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index.encoding import EncodedArtifact
from cascade.index.residual_build import PhaseClock, codec_sample, concat_npy, write_ivf, write_offsets
from cascade.index.token_index import TokenIndexArtifact
from cascade.kernels.assign import ASSIGNMENTS, resolve_assignment
from cascade.kernels.bitpack import VALID_NBITS
from cascade.kernels.residual import ResidualCodec, num_centroids_for, train_codec

log = logging.getLogger(__name__)

CODEC_FILES = ("centroids", "bucket_cutoffs", "bucket_weights")
# Part of every compressed index's cache key: bump it when the stored files change.
# 3: float16 centroids everywhere, residuals / buckets / norm deltas against the rounded centroids.
FORMAT_VERSION = 3
# Part of the k-means cache's key (colbert_centroids): 2: float16 centroids.
CENTROIDS_FORMAT = 2
# The codec's training sample is float16 and at most this many bytes (4,194,304 tokens at dim 384).
SAMPLE_MAX_BYTES = 3 << 30


@dataclass(frozen=True)
class ResidualIndex:
    """An opened compressed index (arrays memory-mapped)."""

    codec: ResidualCodec
    codes: np.ndarray
    residuals: np.ndarray
    norm_deltas: np.ndarray
    offsets: np.ndarray
    ivf_docs: np.ndarray
    ivf_offsets: np.ndarray
    meta: dict
    nbytes: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def decompress_rows(self, rows: np.ndarray) -> np.ndarray:
        """(n, dim) float32 vectors of the token rows ``rows`` (global token indices): the vectors
        MaxSim scores (centroid + residual, scaled to unit length by the stored norm delta)."""
        rows = np.asarray(rows, np.int64)
        return self.codec.decompress(np.asarray(self.codes[rows]), np.asarray(self.residuals[rows]),
                                     deltas=np.asarray(self.norm_deltas[rows]))

    def scorer(self, compute_dtype: str = "float32", device: str | None = None):
        """A MaxSim tile scorer over this index (``maxsim(..., scorer=...)``), decoding only residuals."""
        import torch

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[compute_dtype]
        return self.codec.scorer(self.codes, self.residuals, self.norm_deltas, dtype,
                                 torch.device(device) if device else None)

    def doc(self, i: int) -> np.ndarray:
        """Decompressed token vectors of document ``i``."""
        return self.decompress_rows(np.arange(self.offsets[i], self.offsets[i + 1]))

    def info(self) -> dict:
        """Index size: total bytes on disk, bytes per token, and the codes + residuals share alone."""
        tokens = max(len(self.codes), 1)
        payload = self.codes.itemsize + self.residuals.shape[1] + self.norm_deltas.itemsize
        return {"index_bytes": self.nbytes, "bytes_per_token": self.nbytes / tokens,
                "payload_bytes_per_token": payload, "nbits": self.codec.nbits,
                "num_centroids": self.codec.num_centroids}


def check_assignment(assignment: object, owner: str = "colbert") -> str:
    """``assignment``: auto, exact or coarse; anything else is a ConfigError."""
    if assignment not in ASSIGNMENTS:
        raise ConfigError(f"{owner}.assignment must be one of {', '.join(ASSIGNMENTS)} (how tokens find their "
                          f"centroid: auto is exact up to 16,384 centroids, coarse-to-fine above), got {assignment!r}")
    return str(assignment)


def check_nbits(nbits: object, owner: str = "colbert") -> int | None:
    """``nbits``: None (the fp16 index) or 1, 2 or 4; anything else is a ConfigError."""
    if nbits is None:
        return None
    if isinstance(nbits, bool) or nbits not in VALID_NBITS:
        raise ConfigError(f"{owner}.nbits must be one of {', '.join(map(str, VALID_NBITS))} (bits per dimension "
                          f"of the compressed index) or null for the uncompressed fp16 index, got {nbits!r}")
    return int(nbits)


class ResidualIndexArtifact(EncodedArtifact):
    """A compressed token index built from an encoder pass (see the module docstring).

    Args beyond :class:`EncodedArtifact`: ``nbits``; ``num_centroids`` (None: colbert-ai's
    ``2**floor(log2(16 sqrt(tokens)))``); ``kmeans_niter`` (colbert-ai's default 4);
    ``points_per_centroid`` (training sample size per centroid, bounds the k-means cost);
    ``assignment`` (auto, exact, coarse); ``token_source``: an fp16 token index of the same pass to
    sample from when already built.
    """

    kind = "residual"

    def __init__(self, path: Path, meta: dict, doc_pass: DocPass, chunk_size: int = 256, progress: bool = True,
                 token_source: TokenIndexArtifact | None = None, seed: int = 0):
        super().__init__(path, meta, doc_pass, chunk_size, progress)
        nbits = check_nbits(meta["nbits"])
        if nbits is None:
            raise ValueError("a residual index needs nbits (1, 2 or 4); an fp16 index is a TokenIndexArtifact")
        self.nbits: int = nbits
        self.num_centroids = meta.get("num_centroids")
        self.kmeans_niter = int(meta.get("kmeans_niter", 4))
        self.points_per_centroid = int(meta.get("points_per_centroid", 32))
        self.assignment = check_assignment(meta.get("assignment", "auto"))
        self.token_source, self.seed = token_source, seed
        self._codec: ResidualCodec | None = None
        self._clock = PhaseClock()
        self._bar: Any = None  # the assign + compress progress bar, made by before_pass

    # --- building -----------------------------------------------------------------------------
    def build_group(self, group, corpus: Corpus, engine=None) -> None:
        """From the cached fp16 index of the same pass when there is one (no encoding), else by a pass."""
        if all(isinstance(a, ResidualIndexArtifact) and a.token_source is not None and a.token_source.is_built()
               for a in group):
            from cascade.index import store

            for art in group:
                with store.locked(art.path):
                    if not store.is_valid(art.path):
                        art._derive(corpus)
            return
        super().build_group(group, corpus, engine)

    def _derive(self, corpus: Corpus) -> None:
        """Compress the cached fp16 token index chunk by chunk (streaming, resumable like a pass)."""
        import shutil
        import time

        from cascade.index import store
        from cascade.index.encoding import _chunk_base, _resume_state

        if self.token_source is None:
            raise RuntimeError(f"{self.path.name}: no cached fp16 token index to compress from")
        token_source = self.token_source
        source = token_source.open(corpus)
        done = _resume_state(self, corpus)
        self.before_pass(corpus)
        start, bases = time.perf_counter(), []
        for s in range(0, len(corpus), self.chunk_size):
            e = min(s + self.chunk_size, len(corpus))
            base = _chunk_base(self, s)
            bases.append(base)
            if s in done:
                self._bar.update(int(source.offsets[e] - source.offsets[s]))
                continue
            lo, hi = int(source.offsets[s]), int(source.offsets[e])
            with self._clock("read"):
                enc = Encoded(None, np.asarray(source.tokens[lo:hi], np.float32), np.diff(source.offsets[s:e + 1]))
            self.save_chunk(base, enc)
            store.write_chunk_marker(base, {"start": s, "end": e, "truncated": 0})
        seconds = time.perf_counter() - start
        log.info("compressed %d token vectors from %s in %.1f s", int(source.offsets[-1]),
                 token_source.path.name, seconds)
        truncated = int(source.meta.get("truncated_docs", 0))
        meta = {**self.full_meta(corpus), "truncated_docs": truncated, "compress_seconds": round(seconds, 3),
                "derived_from": token_source.path.name}
        store.publish(self.path, lambda out: self.assemble(out, bases, corpus), meta)
        shutil.rmtree(self.partial, ignore_errors=True)

    # --- codec, trained before the pass ----------------------------------------------------
    def before_pass(self, corpus: Corpus) -> None:
        files = [self.partial / f"codec.{name}.npy" for name in CODEC_FILES]
        if all(f.is_file() for f in files):  # a resumed build keeps its codec
            centroids, cutoffs, weights = (np.load(f) for f in files)
            with self._clock("buckets"):
                self._codec = ResidualCodec(centroids.astype(np.float16), cutoffs, weights, self.nbits,
                                            centroids.shape[1]).with_assignment(self.assignment, self.seed)
        else:
            with self._clock("sample"):
                sample, total_tokens = self._sample(corpus)
            wanted = self.num_centroids or num_centroids_for(total_tokens)
            if wanted > len(sample):
                log.info("%s: %d centroids asked for but only %d sample tokens; training %d centroids",
                         self.path.name, wanted, len(sample), len(sample))
                wanted = len(sample)
            with self._clock("kmeans"):
                centroids = self._centroids(corpus, sample, wanted, total_tokens)
            with self._clock("buckets"):
                codec = train_codec(sample, wanted, self.nbits, self.seed, self.kmeans_niter, centroids=centroids,
                                    assignment=self.assignment)
            del sample
            for name, array in zip(CODEC_FILES, (codec.centroids, codec.bucket_cutoffs, codec.bucket_weights)):
                atomic_save_npy(self.partial / f"codec.{name}.npy", array)
            self._codec = codec
        self._bar = tqdm(desc=f"assign + compress ({self._mode()} assignment)", unit="tok", unit_scale=True,
                         disable=not self.progress, leave=False)

    @property
    def codec(self) -> ResidualCodec:
        """The codec this build compresses with (trained or reloaded by :meth:`before_pass`)."""
        if self._codec is None:
            raise RuntimeError(f"{self.path.name}: the codec is made by before_pass(), which has not run")
        return self._codec

    def _mode(self) -> str:
        return resolve_assignment(self.assignment, self.codec.num_centroids)

    def _centroid_settings(self) -> dict:
        settings = {k: v for k, v in self.meta.items() if k not in ("nbits", "format_version")}
        return {**settings, "centroids_format": CENTROIDS_FORMAT}

    def centroids_dir(self, corpus: Corpus, count: int) -> Path:
        """Where the k-means cache of ``count`` centroids for this index's settings lives."""
        from cascade.index import store

        return store.artifact_dir(self.path.parent.parent, "colbert_centroids", corpus=corpus.fingerprint,
                                  seed=self.seed, count=count, **self._centroid_settings())

    def _centroids(self, corpus: Corpus, sample: np.ndarray, wanted: int, total_tokens: int) -> np.ndarray:
        """k-means centroids (float16), cached apart from ``nbits`` (1, 2 and 4 bits share one k-means)."""
        from cascade.index import store
        from cascade.kernels.kmeans import train_centroids

        path, settings = self.centroids_dir(corpus, wanted), self._centroid_settings()
        two_level = resolve_assignment(self.assignment, wanted) == "coarse"

        def build(tmp: Path) -> dict:
            log.info("training %d centroids (%s k-means, %d iterations) on %d of ~%d token vectors", wanted,
                     "two-level" if two_level else "flat", self.kmeans_niter, len(sample), total_tokens)
            rows = np.random.default_rng(self.seed).permutation(len(sample))
            held = min(int(0.05 * len(sample)), 50_000)  # as train_codec: buckets are fit on the rest
            centroids = train_centroids(sample, wanted, self.seed, self.kmeans_niter, two_level=two_level,
                                        progress=self.progress, rows=np.sort(rows[:len(sample) - held]))
            np.save(tmp / "centroids.npy", centroids.astype(np.float16))
            return {"sample_tokens": len(sample), "two_level": two_level}

        store.ensure(path, build, {**settings, "corpus": corpus.fingerprint, "count": wanted})
        return np.load(path / "centroids.npy")

    def _sample(self, corpus: Corpus) -> tuple[np.ndarray, int]:
        """A bounded random sample of the corpus's token vectors (float16) and the corpus's token count."""
        if self.token_source is None:
            raise RuntimeError(f"{self.path.name}: no cached fp16 token index to compress from")
        token_source = self.token_source
        source = token_source.open(corpus) if self.token_source is not None and self.token_source.is_built() \
            else None
        if source is not None:
            log.info("sampling the codec's token vectors from the fp16 index %s", self.token_source.path.name)
        return codec_sample(corpus, self.doc_pass, source, self._sample_size, self.chunk_size, self.seed,
                            self.progress)

    def _sample_size(self, total: int, dim: int) -> int:
        want = self.points_per_centroid * (self.num_centroids or num_centroids_for(total))
        cap = SAMPLE_MAX_BYTES // (2 * dim)
        if want > cap:
            log.info("codec sample capped at %d token vectors (%d wanted)", cap, want)
        return int(min(total, want, cap))

    # --- the format --------------------------------------------------------------------------
    def save_chunk(self, base: Path, enc: Encoded) -> None:
        tokens = np.asarray(enc.tokens, np.float32)
        with self._clock("assign"):
            codes = self.codec.assign(tokens)
        with self._clock("compress"):
            codes, residuals = self.codec.compress(tokens, codes=codes)
            deltas = self.codec.norm_deltas(codes, residuals)
        with self._clock("save"):
            atomic_save_npy(base.with_suffix(".codes.npy"), codes.astype(self._code_dtype()))
            atomic_save_npy(base.with_suffix(".residuals.npy"), residuals)
            atomic_save_npy(base.with_suffix(".norms.npy"), deltas)
            atomic_save_npy(base.with_suffix(".lengths.npy"), np.asarray(enc.lengths, np.int64))
        if self._bar is not None:
            self._bar.update(len(tokens))

    def _code_dtype(self) -> type:
        return np.uint16 if self.codec.num_centroids <= 1 << 16 else np.int32

    def assemble(self, out: Path, bases: list[Path], corpus: Corpus) -> dict:
        if self._bar is not None:
            self._bar.close()
        code_dtype, width = self._code_dtype(), self.codec.dim * self.nbits // 8
        with self._clock("assemble"):
            parts = lambda kind: [b.with_suffix(f".{kind}.npy") for b in bases]  # noqa: E731
            total = write_offsets(out / "offsets.npy", (np.load(p) for p in parts("lengths")), len(corpus))
            shapes = [concat_npy(out / f"{name}.npy", parts(kind), dtype) for name, kind, dtype in (
                ("codes", "codes", code_dtype), ("residuals", "residuals", np.uint8),
                ("norm_deltas", "norms", np.float16))]
            if shapes != [(total,), (total, width), (total,)]:
                raise CorruptArtifactError(f"the saved chunks of {self.path} do not add up; delete "
                                           f"{self.partial} and rebuild")
            np.save(out / "centroids.npy", np.asarray(self.codec.centroids, np.float16))
            np.save(out / "bucket_cutoffs.npy", self.codec.bucket_cutoffs)
            np.save(out / "bucket_weights.npy", self.codec.bucket_weights)
        with self._clock("ivf"):
            chunks = ((np.load(c), np.load(n)) for c, n in zip(parts("codes"), parts("lengths")))
            pairs = write_ivf(out, chunks, len(corpus), self.codec.num_centroids, self.partial / "ivf_keys.bin")
        phases = self._clock.report()
        log.info("%s build phases: %s", self.path.name, phases)
        return {"dim": self.codec.dim, "num_tokens": total, "num_centroids": self.codec.num_centroids,
                "ivf_pairs": pairs, "assignment_used": self._mode(), "build_phases": phases}

    def open(self, corpus: Corpus) -> ResidualIndex:
        meta = self.checked_meta(corpus)
        load = lambda name, mmap=None: np.load(self.path / f"{name}.npy", mmap_mode=mmap)  # noqa: E731
        centroids = load("centroids").astype(np.float32)
        codec = ResidualCodec(centroids, load("bucket_cutoffs"), load("bucket_weights"), int(meta["nbits"]),
                              centroids.shape[1])
        codes, residuals, offsets = load("codes", "r"), load("residuals", "r"), load("offsets")
        deltas, ivf_docs, ivf_offsets = load("norm_deltas", "r"), load("ivf_docs"), load("ivf_offsets")
        if (len(offsets) != len(corpus) + 1 or offsets[-1] != len(codes) or len(residuals) != len(codes)
                or len(deltas) != len(codes)
                or len(ivf_offsets) != codec.num_centroids + 1 or ivf_offsets[-1] != len(ivf_docs)):
            raise CorruptArtifactError(f"the compressed index at {self.path} is inconsistent; delete it and rebuild")
        nbytes = sum(int(f["bytes"]) for f in meta["files"].values())
        return ResidualIndex(codec, codes, residuals, deltas, offsets, ivf_docs, ivf_offsets, meta, nbytes)
