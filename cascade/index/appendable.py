"""The files of a saved index: append-only arrays and immutable ``.npy`` files, each checksummed.

An *append-only array* is a ``.npy`` file whose header is padded to :data:`HEADER` bytes; rows are
only ever added at its end. A generation's manifest describes it by a *spec*::

    {"file": "s1.vectors.e0.npy", "dtype": "<f4", "shape": [rows, 384],
     "ranges": [[0, 5183, "<xxh3-128>"], [5183, 5235, "<xxh3-128>"]]}

``shape[0]`` rows are valid in that generation and each range of rows appended by one write
carries the xxh3-128 of its bytes. Readers map exactly their rows (:func:`open_array`), so a writer
appending for the next generation never disturbs them; bytes past the last range (an append that
was killed) belong to no generation and are cut off by the next :class:`Appender`. The header's shape
is advisory (``np.load`` of the file works); the manifest is the truth.

An *immutable file* (a generation's inverted lists, deletions, BM25 model...) is written once,
atomically, and described by ``{"file": name, "bytes": n, "xxh3_128": h}``.

:func:`verify` checks specs against the bytes. As :mod:`cascade.index.store` does, a file is hashed
once per identity (device, inode, size, mtime, ctime), recorded in ``.verified.json``; a writer that
appends to a verified file records the new identity with the ranges it wrote (:func:`record`), so
opening an index after an ``add`` does not hash it all again. Written and read by this module alone.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from cascade.core.errors import CorruptArtifactError
from cascade.core.files import atomic_save_npy, atomic_write_json
from cascade.index.crashpoints import crash_point
from cascade.index.store import file_hash

log = logging.getLogger(__name__)

HEADER = 128
HASH = "xxh3_128"
VERIFIED = ".verified.json"
_READ = 8 << 20


def _header(dtype: np.dtype, shape: tuple) -> bytes:
    """A .npy version 1.0 header of exactly :data:`HEADER` bytes."""
    text = f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    body = text.ljust(HEADER - 10 - 1) + "\n"
    if len(body) != HEADER - 10:
        raise ValueError(f"shape {shape} does not fit a {HEADER}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def new_spec(name: str, dtype: DTypeLike, tail: tuple = ()) -> dict:
    """The spec of an empty append-only array (its file is made by the first :class:`Appender`)."""
    return {"file": name, "dtype": np.lib.format.dtype_to_descr(np.dtype(dtype)), "shape": [0, *map(int, tail)],
            "ranges": []}


def _rowbytes(spec: dict) -> int:
    return int(np.dtype(spec["dtype"]).itemsize * np.prod(spec["shape"][1:], dtype=np.int64))


def identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class Appender:
    """Appends rows to the file of ``spec`` after its last valid row; :meth:`finish` returns the new spec.

    Opening cuts off bytes past the valid rows (a killed append's). All rows written between
    opening and :meth:`finish` form one checksummed range.
    """

    def __init__(self, root: Path, spec: dict):
        self.root, self.spec = Path(root), spec
        self.path = self.root / spec["file"]
        self.dtype, self.tail = np.dtype(spec["dtype"]), tuple(spec["shape"][1:])
        if not self.path.exists():
            if spec["shape"][0]:
                raise CorruptArtifactError(f"saved index {root}: {spec['file']} is missing")
            with open(self.path, "wb") as handle:
                handle.write(_header(self.dtype, (0, *self.tail)))
        self.before = identity(self.path)
        self.handle = open(self.path, "r+b")
        end = HEADER + spec["shape"][0] * _rowbytes(spec)
        size = os.fstat(self.handle.fileno()).st_size
        if size < end:
            self.handle.close()
            raise CorruptArtifactError(f"saved index {root}: {spec['file']} holds {size} bytes, fewer than the "
                                       f"{end} its manifest names (truncated); restore the folder from a copy")
        if size > end:
            log.info("%s: cutting off %d bytes of an unfinished append", self.path, size - end)
            self.handle.truncate(end)
        self.handle.seek(end)
        import xxhash

        self.digest, self.added = xxhash.xxh3_128(), 0

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (converted to the file's dtype; their trailing shape must match)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.tail:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]} appended to (n, *{self.tail})")
        data = rows.reshape(-1).view(np.uint8).data  # a memoryview of the bytes
        half = len(data) // 2
        self.handle.write(data[:half])
        crash_point(f"append {self.path.name}")
        self.handle.write(data[half:])
        self.digest.update(data)
        self.added += len(rows)

    def finish(self) -> dict:
        """Flush and sync the rows, update the advisory header; the spec that includes them."""
        rows0 = self.spec["shape"][0]
        rows1 = rows0 + self.added
        if not self.added and rows0:  # nothing appended: the file is left as it was found
            self.handle.close()
            self.after, self.new_spec = identity(self.path), self.spec
            return self.spec
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.seek(0)
        self.handle.write(_header(self.dtype, (rows1, *self.tail)))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        ranges = list(self.spec["ranges"]) + ([[rows0, rows1, self.digest.hexdigest()]] if self.added else [])
        self.after = identity(self.path)
        self.new_spec = {**self.spec, "shape": [rows1, *self.tail], "ranges": ranges}
        return self.new_spec

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()


def append(root: Path, spec: dict, rows: np.ndarray) -> tuple[dict, Appender]:
    """Append ``rows`` in one write; the new spec and the finished appender (for :func:`record`)."""
    app = Appender(root, spec)
    try:
        app.write(rows)
        return app.finish(), app
    finally:
        app.close()


def open_array(root: Path, spec: dict) -> np.ndarray:
    """The valid rows of an append-only array, memory-mapped read-only (an empty array for none)."""
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    path = Path(root) / spec["file"]
    need = HEADER + shape[0] * _rowbytes(spec)
    if path.stat().st_size < need:
        raise CorruptArtifactError(f"saved index {root}: {spec['file']} is shorter than its manifest says "
                                   "(truncated); restore the folder from a copy")
    return np.memmap(path, dtype, "r", offset=HEADER, shape=shape)


def save_file(root: Path, name: str, array: np.ndarray) -> dict:
    """Write an immutable ``.npy`` atomically; its spec (size and hash)."""
    atomic_save_npy(Path(root) / name, np.asarray(array))
    crash_point(f"write {name}")
    return stamp(root, name)


def stamp(root: Path, name: str) -> dict:
    """The spec of an immutable file already written under ``root``."""
    path = Path(root) / name
    return {"file": name, "bytes": path.stat().st_size, HASH: file_hash(path)}


def load_file(root: Path, spec: dict, mmap: bool = False) -> np.ndarray:
    return np.load(Path(root) / spec["file"], mmap_mode="r" if mmap else None, allow_pickle=False)


def _range_hash(handle, start: int, count: int) -> str:
    import xxhash

    digest = xxhash.xxh3_128()
    handle.seek(start)
    while count > 0:
        block = handle.read(min(count, _READ))
        if not block:
            break
        digest.update(block)
        count -= len(block)
    return digest.hexdigest() if count == 0 else "truncated"


def read_verified(root: Path) -> dict:
    try:
        data = json.loads((Path(root) / VERIFIED).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_verified(root: Path, verified: dict) -> None:
    try:
        atomic_write_json(Path(root) / VERIFIED, verified)
    except OSError as err:  # a read-only copy: verified again at the next open
        log.debug("could not record verified files in %s: %s", root, err)


def verify(root: Path, specs: Iterable[dict], full: bool = False) -> int:
    """Check every spec against its file (hashing only what is not yet verified at the file's identity);
    a :class:`CorruptArtifactError` naming the file and rows on the first mismatch. Returns bytes hashed."""
    root = Path(root)
    verified = {} if full else read_verified(root)
    hashed, changed = 0, False
    for spec in specs:
        name, path = spec["file"], root / spec["file"]
        fix = "restore the index folder from a copy (or rebuild it)"
        if not path.is_file():
            raise CorruptArtifactError(f"saved index {root}: {name} is missing; {fix}")
        ident, known = identity(path), verified.get(name, {})
        same = known.get("identity") == ident
        if "ranges" in spec:
            done = {tuple(r) for r in known.get("ranges", [])} if same else set()
            todo = [r for r in spec["ranges"] if tuple(r) not in done]
            if ident[2] < HEADER + spec["shape"][0] * _rowbytes(spec):
                raise CorruptArtifactError(f"saved index {root}: {name} is shorter than its manifest says; {fix}")
            with open(path, "rb") as handle:
                for r0, r1, digest in todo:
                    start, count = HEADER + r0 * _rowbytes(spec), (r1 - r0) * _rowbytes(spec)
                    hashed += count
                    if _range_hash(handle, start, count) != digest:
                        raise CorruptArtifactError(f"saved index {root}: {name} rows {r0}:{r1} do not match their "
                                                   f"checksum (damaged); {fix}")
            if todo:
                verified[name] = {"identity": ident, "ranges": sorted(map(list, done | {tuple(r) for r in todo}))}
                changed = True
        elif not (same and known.get(HASH) == spec[HASH]):
            hashed += ident[2]
            if ident[2] != spec["bytes"] or file_hash(path) != spec[HASH]:
                raise CorruptArtifactError(f"saved index {root}: {name} does not match its checksum (damaged); {fix}")
            verified[name], changed = {"identity": ident, HASH: spec[HASH]}, True
    if changed:
        write_verified(root, verified)
    return hashed


def record(root: Path, appended: Iterable[Appender], written: Iterable[dict], keep: Iterable[str]) -> None:
    """After a commit: carry the verification of appended files to their new identity (when it held
    just before the append), record the immutable files just written, forget files not in ``keep``."""
    root = Path(root)
    verified, keep = read_verified(root), set(keep)
    for app in appended:
        name = app.spec["file"]
        known = verified.get(name, {})
        if not app.added:
            continue
        if app.spec["shape"][0] == 0 or known.get("identity") == app.before:  # new, or verified just before
            old = {tuple(r) for r in known.get("ranges", [])} if app.spec["shape"][0] else set()
            ranges = old | {tuple(app.new_spec["ranges"][-1])}
            verified[name] = {"identity": app.after, "ranges": sorted(map(list, ranges))}
        else:
            verified.pop(name, None)
    for spec in written:
        path = root / spec["file"]
        if path.is_file():
            verified[spec["file"]] = {"identity": identity(path), HASH: spec[HASH]}
    write_verified(root, {k: v for k, v in verified.items() if k.split("/")[0] in keep})
