"""Resumable corpus encoding: one encoder pass fills every artifact that shares it.

An :class:`EncodedArtifact` is a cached array file set built from an encoder's pass over
a corpus (pooled vectors, a token index, a compressed token index). Artifacts whose
encoder made the same :class:`~cascade.encoders.sentence.DocPass` key share one forward
pass (:func:`build_pass`). The format itself (how a chunk is saved, how chunks are
assembled, how the result is opened) belongs to each subclass, in its own module.

Documents are encoded in fixed chunks; each finished chunk is saved at once under
``<artifact>.partial/`` (arrays first, then a small JSON marker, each written atomically).
A killed build restarted with the same settings skips the chunks already saved, so the
finished artifact equals one built in a single go. Builds hold the artifacts' locks
(:func:`cascade.index.store.locked`): a second process waits, then reuses the result.

Who runs the encoder is the *engine*'s business (:class:`EncodingEngine`): :class:`LocalEngine`
(this process, the default) or :class:`cascade.index.ray_engine.RayEngine` (Ray workers). Either
way this process saves each finished chunk, so the layout, resume and result are the same.

The autocast precision is the pass's own (:attr:`DocPass.precision`, the effective precision its
stage resolved, :mod:`cascade.kernels.precision`): it is part of the pass key and of every
artifact's meta, hence of its cache key, so fp32, bf16 and fp16 builds never stand in for each
other. An engine given ``precision`` (``encoding.precision``) refuses a pass planned at another one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from tqdm.auto import tqdm

from cascade.core.data import Corpus
from cascade.core.errors import CascadeError, ConfigError
from cascade.core.files import atomic_write_json
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index import store
from cascade.kernels.precision import check_precision, resolve_precision

if TYPE_CHECKING:
    from cascade.core.indexing import Artifact

log = logging.getLogger(__name__)

Chunk = tuple[int, int]


class EncodingEngine(Protocol):
    """Runs a :class:`DocPass` over chunks of documents; see the module docstring."""

    name: str

    def encode_chunks(self, doc_pass: DocPass, texts: Callable[[int, int], list[str]], chunks: Sequence[Chunk],
                      save: Callable[[int, int, Encoded], None], progress: Callable[[int], None]) -> dict:
        """Encode ``texts(start, end)`` of every chunk and call ``save(start, end, encoded)`` in this
        process as each one finishes (in any order); ``progress(n)`` counts documents. Returns
        provenance entries for the artifacts' meta (engine, workers...)."""


def check_pass_precision(precision: str | None, doc_pass: DocPass) -> None:
    """Refuse a pass planned at another effective precision than ``precision`` (None: any) means for it."""
    if precision is None or doc_pass.precision is None:
        return
    wanted = resolve_precision(precision, doc_pass.device)
    if wanted != doc_pass.precision:
        raise ConfigError(f"encoding.precision={precision} means {wanted} on {doc_pass.device}, but this corpus "
                          f"pass was planned at {doc_pass.precision} by its stage's own precision setting; "
                          f"leave stage.<name>.precision following encoding.precision (as conf/stage/*.yaml "
                          f"does), or set encoding.precision={doc_pass.precision}")


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def release_free_memory() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim``; elsewhere a no-op).

    A build allocates and frees large arrays chunk after chunk (tokens, scores, residuals). glibc
    keeps freed blocks below its mmap threshold in its heap, which fragments: the 1M synthetic build
    (``experiments/scale/library_build.py``) held 8.85 GB anonymous memory, 6.4 GB of it heap, after
    384k documents. Trimming after each chunk: peak anonymous RSS 2.9 GB against 4.5 GB untrimmed
    on a 60k-document build (larger builds not yet re-measured).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class LocalEngine:
    """Encode in this process, chunk after chunk (the default engine).

    Each pass runs at its own precision (see the module docstring). ``precision`` (``auto``,
    ``fp32``, ``bf16``, ``fp16``; None: whatever the stages chose) is checked against every pass.
    """

    name = "local"

    def __init__(self, precision: str | None = None):
        self.precision = None if precision is None else check_precision(precision)

    def encode_chunks(self, doc_pass: DocPass, texts: Callable[[int, int], list[str]], chunks: Sequence[Chunk],
                      save: Callable[[int, int, Encoded], None], progress: Callable[[int], None]) -> dict:
        check_pass_precision(self.precision, doc_pass)
        for start, end in chunks:
            save(start, end, doc_pass.encode(texts(start, end), progress))
        return {"engine": self.name}

    def __repr__(self) -> str:
        return f"LocalEngine(precision={self.precision!r})"


class EncodedArtifact:
    """A cached artifact built from an encoder pass over a corpus (see the module docstring)."""

    kind: ClassVar[str] = "base"

    def __init__(self, path: Path, meta: dict, doc_pass: DocPass, chunk_size: int = 256, progress: bool = True):
        if doc_pass.precision is not None and meta.get("precision") != doc_pass.precision:
            raise CascadeError(f"{type(self).__name__} {path}: its meta (the cache key) must record the pass's "
                               f"precision {doc_pass.precision!r}, found {meta.get('precision')!r}; add "
                               "'precision': <encoder>.precision to the meta the path is made from")
        self.path, self.meta, self.doc_pass = Path(path), dict(meta), doc_pass
        self.chunk_size, self.progress = chunk_size, progress

    # --- the Artifact protocol (cascade.core.indexing) ----------------------------------
    def group_key(self) -> tuple:
        return ("encoder-pass", self.doc_pass.key, self.chunk_size)

    def is_built(self) -> bool:
        return store.is_valid(self.path)

    def build_group(self, group: Sequence[Artifact], corpus: Corpus, engine: EncodingEngine | None = None) -> None:
        # a group shares this artifact's group_key, ("encoder-pass", ...): every member is an EncodedArtifact
        build_pass(cast("Sequence[EncodedArtifact]", group), corpus, engine)

    # --- the format: implemented by each subclass ------------------------------------------
    def before_pass(self, corpus: Corpus) -> None:
        """Called (under the lock, with ``partial`` ready) before any chunk is encoded; no-op by default."""

    def save_chunk(self, base: Path, enc: Encoded) -> None:
        """Save one chunk's share of the pass as files named ``<base>.<something>.npy``."""
        raise NotImplementedError

    def assemble(self, out: Path, bases: list[Path], corpus: Corpus) -> dict:
        """Write the final files into ``out`` from the saved chunks; return extra meta."""
        raise NotImplementedError

    def open(self, corpus: Corpus) -> Any:
        """Load the finished artifact (memory-mapped), verified against ``corpus``."""
        raise NotImplementedError

    # --- shared helpers --------------------------------------------------------------------
    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    def full_meta(self, corpus: Corpus) -> dict:
        return {**self.meta, "corpus": corpus.fingerprint, "kind": self.kind, "num_docs": len(corpus)}

    def checked_meta(self, corpus: Corpus) -> dict:
        """The verified meta.json, which must name ``corpus``."""
        meta = store.check(self.path)
        if meta.get("corpus") != corpus.fingerprint or meta.get("num_docs") != len(corpus):
            raise CascadeError(f"the artifact at {self.path} was built for another corpus; delete it and rebuild")
        return meta

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path})"


def _chunk_base(art: EncodedArtifact, start: int) -> Path:
    return art.partial / f"{start:010d}"


def _resume_state(art: EncodedArtifact, corpus: Corpus) -> set[int]:
    """Create or validate ``art.partial``; return the chunk starts already saved there."""
    expected = json.loads(json.dumps({**art.full_meta(corpus), "chunk_size": art.chunk_size}, default=str))
    marker = art.partial / "settings.json"
    if art.partial.is_dir():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != expected:
            log.warning("discarding partial build %s: made with other settings", art.partial)
            shutil.rmtree(art.partial, ignore_errors=True)
    art.partial.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_json(marker, expected)
    done = set()
    for path in art.partial.glob("*.chunk.json"):
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
            start = int(marker["start"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable chunk marker %s", path)
            continue
        if store.chunk_is_intact(path.with_name(path.name[:-len(".chunk.json")]), marker):
            done.add(start)
        else:
            log.warning("chunk %s of the partial build is damaged or incomplete: encoding it again", path.name)
    return done


def build_pass(group: Sequence[EncodedArtifact], corpus: Corpus, engine: EncodingEngine | None = None) -> None:
    """Build every artifact of ``group`` (all with one ``doc_pass``) in one resumable pass.

    ``engine`` runs the encoder (default: :class:`LocalEngine`, in this process).
    """
    with ExitStack() as stack:
        for art in sorted(group, key=lambda a: str(a.path)):
            stack.enter_context(store.locked(art.path))
        todo_arts = [a for a in group if not store.is_valid(a.path)]  # another process may have built some
        if todo_arts:
            _encode_and_assemble(todo_arts, corpus, engine or LocalEngine())


def _encode_and_assemble(group: Sequence[EncodedArtifact], corpus: Corpus, engine: EncodingEngine) -> None:
    first = group[0]
    done = {id(a): _resume_state(a, corpus) for a in group}
    for art in group:
        art.before_pass(corpus)
    ranges = [(s, min(s + first.chunk_size, len(corpus))) for s in range(0, len(corpus), first.chunk_size)]
    todo = [(s, e) for s, e in ranges if any(s not in done[id(a)] for a in group)]
    resumed = len(corpus) - sum(e - s for s, e in todo)
    kinds = "+".join(a.kind for a in group)
    if resumed:
        log.info("resuming %s encoding: %d of %d documents already encoded", kinds, resumed, len(corpus))

    def save(s: int, e: int, enc: Encoded) -> None:
        if len(enc.lengths) != e - s:
            raise CascadeError(f"the {engine.name} engine returned {len(enc.lengths)} documents for chunk {s}:{e}")
        for art in group:
            if s not in done[id(art)]:
                base = _chunk_base(art, s)
                art.save_chunk(base, enc)  # arrays first, then the marker: a chunk counts once both are there
                store.write_chunk_marker(base, {"start": s, "end": e, "truncated": enc.truncated})
        release_free_memory()

    start = time.perf_counter()
    with tqdm(total=len(corpus), initial=resumed, desc=f"encoding corpus ({kinds}, {engine.name})", unit="doc",
              disable=not first.progress, leave=False) as bar:
        provenance = engine.encode_chunks(first.doc_pass, lambda s, e: list(corpus.texts[s:e]), todo, save,
                                          bar.update) if todo else {"engine": engine.name}
    seconds = time.perf_counter() - start
    encoded = len(corpus) - resumed
    rate = encoded / seconds if seconds > 0 else float("inf")
    if encoded:
        log.info("encoded %d documents (%s, %s engine) in %.1f s: %.1f docs/s", encoded, kinds, engine.name,
                 seconds, rate)
    stats = {"encode_seconds": round(seconds, 3), "encoded_docs": encoded,
             "docs_per_second": round(rate, 2) if encoded else None, "shared_with": [a.kind for a in group],
             **provenance}
    for art in group:
        bases = [_chunk_base(art, s) for s, _ in ranges]
        truncated = sum(int(json.loads(b.with_suffix(".chunk.json").read_text())["truncated"]) for b in bases)
        meta = {**art.full_meta(corpus), "truncated_docs": truncated, **stats}
        store.publish(art.path, functools.partial(art.assemble, bases=bases, corpus=corpus), meta)
        shutil.rmtree(art.partial, ignore_errors=True)
        if truncated:
            log.info("%s: %d of %d documents were longer than %s tokens and were truncated", art.path.name,
                     truncated, len(corpus), art.meta.get("doc_max_length", "the maximum"))
