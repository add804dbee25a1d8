"""One write to a saved index: the generation it starts from, the files it adds, and its commit.

A :class:`Txn` hands out appenders (rows past the base generation's extent) and writes immutable
files named for the new generation (``s<i>.<what>.g<generation>.npy``) or, for files a compaction
rewrites, for the new epoch (``s<i>.<what>.e<epoch>.npy``). Nothing it writes is visible until
:meth:`Txn.commit` switches ``CURRENT``; a writer killed before that leaves the base generation as it
was (the next writer's :func:`~cascade.index.generations.cleanup` removes the leftovers).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from cascade.index import appendable, generations
from cascade.index.appendable import Appender


class Txn:
    """Files of the next generation after ``base`` (None: the first generation of a new index)."""

    def __init__(self, root: Path, base: dict | None, new_epoch: bool = False):
        self.root, self.base = Path(root), base
        self.generation = 0 if base is None else base["generation"] + 1
        self.epoch = 0 if base is None else base["epoch"] + (1 if new_epoch else 0)
        self.appenders: list[Appender] = []
        self.written: list[dict] = []

    def name(self, part: int | str, what: str, per_epoch: bool = False, ext: str = ".npy") -> str:
        prefix = part if isinstance(part, str) else f"s{part}"
        return f"{prefix}.{what}.{'e' if per_epoch else 'g'}{self.epoch if per_epoch else self.generation}{ext}"

    def appender(self, spec: dict) -> Appender:
        app = Appender(self.root, spec)
        self.appenders.append(app)
        return app

    def append(self, spec: dict, rows: np.ndarray) -> dict:
        app = self.appender(spec)
        app.write(rows)
        return app.finish()

    def save(self, name: str, array: np.ndarray) -> dict:
        spec = appendable.save_file(self.root, name, array)
        self.written.append(spec)
        return spec

    def stamp(self, name: str) -> dict:
        spec = appendable.stamp(self.root, name)
        self.written.append(spec)
        return spec

    def commit(self, manifest: dict) -> None:
        """Make ``manifest`` the live generation; then record what was verified and delete what is unused."""
        for app in self.appenders:
            app.close()
        manifest = {**manifest, "generation": self.generation, "epoch": self.epoch,
                    "parent": None if self.base is None else self.base["generation"], "written": time.time()}
        generations.commit(self.root, manifest)
        appendable.record(self.root, self.appenders, self.written, generations.referenced(manifest))
        generations.cleanup(self.root, manifest)
        self.manifest = manifest

    def close(self) -> None:
        for app in self.appenders:
            app.close()


def chain(fingerprint: str, op: str, ids=(), texts=(), rows=()) -> str:
    """The next generation's content hash: the previous one, the operation, its documents and rows."""
    digest = hashlib.sha256(f"{fingerprint}\x00{op}\x00".encode())
    for doc_id, text in zip(ids, texts):
        digest.update(doc_id.encode() + b"\x00" + text.encode() + b"\x01")
    digest.update(np.asarray(list(rows), np.int64).tobytes())
    return digest.hexdigest()[:16]
