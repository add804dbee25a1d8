"""Resumable corpus encoding into cached views, several views per forward pass.

A *view* is one cached artifact a stage needs from an encoder's pass over a
corpus: ``vectors`` (pooled, (N, D) float32) or ``tokens`` (a token index, see
:mod:`cascade.token_index`). Views whose ``pass_key`` is equal come from the same
forward pass (e.g. a bi-encoder and a plain-token ColBERT on one model), so
:func:`build_views` encodes each document once for all of them.

Documents are encoded in fixed chunks; each finished chunk is saved at once under
``<final>.partial/`` (arrays first, then a small JSON marker, each written to a
temporary name and renamed). A killed build restarted with the same settings
skips the chunks already saved; chunk boundaries are fixed, so the finished
artifact equals one built in a single go. The final directory is assembled in a
temporary folder and renamed into place (see :func:`cascade.cache.build_dir`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from cascade.cache import atomic_write_json, build_dir, is_complete
from cascade.data import Corpus
from cascade.encoders import Encoded

log = logging.getLogger(__name__)

KINDS = ("vectors", "tokens")


@dataclass
class CorpusView:
    """One artifact to build from an encoder pass: where it goes, what it holds, how to encode."""

    kind: str
    path: Path
    meta: dict
    pass_key: tuple
    encode: Callable[[list[str], Callable[[int], None]], Encoded] = field(repr=False)
    transform: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"view kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _chunk_name(start: int) -> str:
    return f"{start:010d}"


def _prepare_partial(view: CorpusView, corpus: Corpus) -> set[int]:
    """Create or validate ``view.partial``; return the chunk starts already saved there."""
    expected = {**view.meta, "corpus": corpus.fingerprint, "kind": view.kind}
    marker = view.partial / "settings.json"
    if view.partial.is_dir():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != json.loads(json.dumps(expected, default=str)):
            log.warning("discarding partial build %s: made with other settings", view.partial)
            shutil.rmtree(view.partial, ignore_errors=True)
    view.partial.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_json(marker, expected)
    done = set()
    for path in view.partial.glob("*.chunk.json"):
        info = json.loads(path.read_text(encoding="utf-8"))
        done.add(int(info["start"]))
    return done


def _save_chunk(view: CorpusView, start: int, end: int, enc: Encoded) -> None:
    base = view.partial / _chunk_name(start)
    if view.kind == "vectors":
        vectors = enc.pooled if view.transform is None else view.transform(enc.pooled)
        _save_npy(base.with_suffix(".vectors.npy"), np.asarray(vectors, np.float32))
    else:
        _save_npy(base.with_suffix(".tokens.npy"), np.asarray(enc.tokens, np.float16))
        _save_npy(base.with_suffix(".lengths.npy"), np.asarray(enc.lengths, np.int64))
    atomic_write_json(base.with_suffix(".chunk.json"), {"start": start, "end": end, "truncated": enc.truncated})


def _finalize(view: CorpusView, corpus: Corpus, ranges: list[tuple[int, int]], stats: dict) -> None:
    """Assemble the saved chunks into the final artifact, then drop the partial folder."""
    if is_complete(view.path):  # another process finished it meanwhile
        shutil.rmtree(view.partial, ignore_errors=True)
        return
    infos = [json.loads((view.partial / f"{_chunk_name(s)}.chunk.json").read_text()) for s, _ in ranges]
    truncated = sum(int(i["truncated"]) for i in infos)
    names = [view.partial / _chunk_name(s) for s, _ in ranges]
    meta = {**view.meta, "corpus": corpus.fingerprint, "kind": view.kind, "num_docs": len(corpus),
            "truncated_docs": truncated, **stats}
    with build_dir(view.path, meta) as tmp:
        if view.kind == "vectors":
            parts = [np.load(n.with_suffix(".vectors.npy"), mmap_mode="r") for n in names]
            out = np.lib.format.open_memmap(tmp / "vectors.npy", "w+", np.float32,
                                            (len(corpus), parts[0].shape[1]))
            row = 0
            for part in parts:
                out[row:row + len(part)] = part
                row += len(part)
            out.flush()
            meta["dim"] = int(parts[0].shape[1])
        else:
            lengths = np.concatenate([np.load(n.with_suffix(".lengths.npy")) for n in names])
            first = np.load(names[0].with_suffix(".tokens.npy"), mmap_mode="r")
            out = np.lib.format.open_memmap(tmp / "tokens.npy", "w+", np.float16,
                                            (int(lengths.sum()), first.shape[1]))
            row = 0
            for n in names:
                part = np.load(n.with_suffix(".tokens.npy"), mmap_mode="r")
                out[row:row + len(part)] = part
                row += len(part)
            out.flush()
            np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            meta.update(dim=int(first.shape[1]), num_tokens=int(lengths.sum()))
        del out
    shutil.rmtree(view.partial, ignore_errors=True)
    if truncated:
        log.info("%s: %d of %d documents were longer than %s tokens and were truncated",
                 view.path.name, truncated, len(corpus), view.meta.get("doc_max_length", "the maximum"))


def build_views(views: Iterable[CorpusView], corpus: Corpus, chunk_size: int = 256, progress: bool = True) -> None:
    """Build every view that is not cached yet; views sharing a ``pass_key`` share one encoder pass."""
    groups: OrderedDict[tuple, list[CorpusView]] = OrderedDict()
    seen = set()
    for view in views:
        if view.path in seen or is_complete(view.path):
            continue
        seen.add(view.path)
        groups.setdefault(view.pass_key, []).append(view)
    for group in groups.values():
        _build_group(group, corpus, chunk_size, progress)


def _build_group(group: Sequence[CorpusView], corpus: Corpus, chunk_size: int, progress: bool) -> None:
    done = {id(v): _prepare_partial(v, corpus) for v in group}
    ranges = [(s, min(s + chunk_size, len(corpus))) for s in range(0, len(corpus), chunk_size)]
    todo = [(s, e) for s, e in ranges if any(s not in done[id(v)] for v in group)]
    resumed = len(corpus) - sum(e - s for s, e in todo)
    kinds = "+".join(v.kind for v in group)
    if resumed:
        log.info("resuming %s encoding: %d of %d documents already encoded", kinds, resumed, len(corpus))
    start = time.perf_counter()
    with tqdm(total=len(corpus), initial=resumed, desc=f"encoding corpus ({kinds})", unit="doc",
              disable=not progress, leave=False) as bar:
        for s, e in todo:
            enc = group[0].encode(list(corpus.texts[s:e]), bar.update)
            for view in group:
                if s not in done[id(view)]:
                    _save_chunk(view, s, e, enc)
    seconds = time.perf_counter() - start
    encoded = len(corpus) - resumed
    rate = encoded / seconds if seconds > 0 else float("inf")
    if encoded:
        log.info("encoded %d documents (%s) in %.1f s: %.1f docs/s", encoded, kinds, seconds, rate)
    stats = {"encode_seconds": round(seconds, 3), "encoded_docs": encoded,
             "docs_per_second": round(rate, 2) if encoded else None, "shared_with": [v.kind for v in group]}
    for view in group:
        _finalize(view, corpus, ranges, stats)
