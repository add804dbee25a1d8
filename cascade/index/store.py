"""The content-addressed artifact store: ``<cache_dir>/<kind>/<key>/`` with .npy arrays and meta.json.

One discipline for every writer:

* the key hashes content only (corpus fingerprint, model content hash, settings), never paths;
* an artifact is built in a temporary folder and renamed into place, under a per-artifact
  lock (``<cache>/locks/``), so concurrent processes wait for the builder and then reuse its work;
* ``meta.json`` records each file's size and a full xxh3-128 hash of its bytes (computed at
  publish, at ~8 GB/s), and a hash of itself. A file is hashed in full the first time it is
  loaded in its current identity (device, inode, size, mtime, ctime), which is then recorded in
  ``.verified.json`` beside it; later loads compare that identity only (one ``stat``). Any write
  to a file changes its ctime, and a copy is a new file, so damage by a write, a copy or a sync
  is always hashed before use; ``cascade verify --all`` rehashes everything (bit rot on a disk
  that no write explains). A damaged artifact is rebuilt by :func:`ensure`, or reported with
  the folder to delete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cascade.core.errors import CorruptArtifactError
from cascade.core.files import DIR_MODE, FILE_MODE
from cascade.core.scratch import scratch_dir

log = logging.getLogger(__name__)

META = "meta.json"
DEFAULT_CACHE_DIR = "~/.cache/cascade"
VERIFIED = ".verified.json"
HASH = "xxh3_128"
_READ = 8 << 20  # bytes hashed per read


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache root: the given path, else $CASCADE_CACHE_DIR, else ~/.cache/cascade; inside
    :func:`cascade.core.scratch.scratch_cache` (reranking a list of texts), its private folder, always."""
    scratch = scratch_dir()
    if scratch is not None:
        return scratch
    root = cache_dir or os.environ.get("CASCADE_CACHE_DIR") or DEFAULT_CACHE_DIR
    return Path(root).expanduser()


def cache_key(**parts: Any) -> str:
    """A short stable hash of the settings that determine an artifact."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def artifact_dir(cache_dir: str | os.PathLike | None, kind: str, **parts: Any) -> Path:
    """Where the artifact of ``kind`` for these settings lives (it may not exist yet)."""
    return resolve_cache_dir(cache_dir) / kind / cache_key(**parts)


def file_hash(path: Path) -> str:
    """The xxh3-128 hex digest of the whole file (read in 8 MiB blocks)."""
    import xxhash

    if path.stat().st_size <= _READ:  # one read; no 8 MiB buffer for a small file (a list of texts' index)
        return xxhash.xxh3_128_hexdigest(path.read_bytes())
    digest = xxhash.xxh3_128()
    buffer = bytearray(_READ)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def file_stamp(path: Path) -> dict:
    """Size and full hash of a file, as ``meta.json`` records it."""
    return {"bytes": path.stat().st_size, HASH: file_hash(path)}


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _meta_hash(meta: dict) -> str:
    import xxhash

    body = {k: v for k, v in meta.items() if k != "meta_" + HASH}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True, default=str).encode())


def write_chunk_marker(base: Path, info: dict) -> None:
    """Mark a saved chunk of a resumable build as done: its files' sizes and hashes, then ``info``.

    The chunk's files are ``<base>.<part>.npy``; :func:`chunk_is_intact` checks them on resume,
    so a chunk damaged while a build was stopped is encoded again, never assembled.
    """
    from cascade.core.files import atomic_write_json

    files = {p.name: file_stamp(p) for p in sorted(base.parent.glob(base.name + ".*.npy"))}
    atomic_write_json(base.with_suffix(".chunk.json"), {**info, "files": files})


def chunk_is_intact(base: Path, marker: dict) -> bool:
    """Whether every file a chunk marker lists is there with its size and hash."""
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, stamp in files.items():
        target = base.parent / name
        if not target.is_file() or target.stat().st_size != stamp.get("bytes") or file_hash(target) != stamp.get(HASH):
            return False
    return True


def read_meta(path: Path) -> dict:
    return json.loads((path / META).read_text(encoding="utf-8"))


def is_complete(path: Path) -> bool:
    return (path / META).is_file()


def _verified(path: Path) -> dict:
    try:
        data = json.loads((path / VERIFIED).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_verified(path: Path, verified: dict) -> None:
    from cascade.core.files import atomic_write_json

    try:
        atomic_write_json(path / VERIFIED, verified)
    except OSError as err:  # a read-only cache: verified again at the next load
        log.debug("could not record verified files in %s: %s", path, err)


_OLD_HASH = "sample_sha256"  # the stamp of artifacts built before full checksums: 64 sampled 64 KiB blocks


def _sampled_stamp(path: Path) -> str:
    """The old stamp: sha256 of 64 evenly spaced 64 KiB blocks (the whole file when small)."""
    block, blocks = 1 << 16, 64
    size, digest = path.stat().st_size, hashlib.sha256()
    with path.open("rb") as handle:
        if size <= block * blocks:
            digest.update(handle.read())
        else:
            step = (size - block) // (blocks - 1)
            for i in range(blocks):
                handle.seek(i * step)
                digest.update(handle.read(block))
    return digest.hexdigest()


def _upgrade(path: Path, meta: dict, fix: str) -> dict:
    """Give an artifact built before full checksums its full hashes, once, after its old check passes.

    Re-encoding a large corpus takes hours, so an intact old artifact is kept: its sampled stamps are
    checked as its builder checked them, then every file is hashed in full and ``meta.json`` is
    rewritten atomically. Damage made before the upgrade between the
    sampled blocks cannot be told apart; delete the folder to rebuild it if in doubt.
    """
    from cascade.core.files import atomic_write_text

    for name, stamp in meta["files"].items():
        target = path / name
        if (
            not target.is_file()
            or target.stat().st_size != stamp["bytes"]
            or _sampled_stamp(target) != stamp[_OLD_HASH]
        ):
            raise CorruptArtifactError(
                f"artifact {path}: {name} does not match its (sampled) checksum (damaged); {fix}"
            )
    log.warning("artifact %s was built before full checksums: its sampled checksums match, so it is kept and "
                "hashed in full now (damage made earlier between the sampled blocks cannot be detected; "
                "delete the folder to rebuild it if in doubt)", path)
    files = {name: file_stamp(path / name) for name in meta["files"]}
    full = json.loads(json.dumps({**meta, "files": files, "checksums_upgraded_from": _OLD_HASH}, default=str))
    full["meta_" + HASH] = _meta_hash(full)
    # no lock (a caller may hold this artifact's): concurrent upgraders write the same bytes, atomically
    atomic_write_text(path / META, json.dumps(full, indent=2) + "\n")
    return full


def check(path: Path, full: bool = False) -> dict:
    """The verified ``meta.json`` of the artifact at ``path``; :class:`CorruptArtifactError` if damaged.

    Each file is hashed in full unless its identity was recorded as verified with the same hash
    (``full=True``: hash every file regardless).
    """
    fix = f"delete {path} and run again to rebuild it"
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        raise CorruptArtifactError(f"artifact {path} has no {META} (unfinished or damaged); {fix}") from None
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(f"artifact {path}: unreadable {META} ({err}); {fix}") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if isinstance(files, dict) and files and all(isinstance(f, dict) and set(f) == {"bytes", _OLD_HASH}
                                                 for f in files.values()):
        meta = _upgrade(path, meta, fix)  # built by cascade <= 0.x before full checksums: checked, then hashed
        files = meta["files"]
    if not isinstance(files, dict) or not all(isinstance(f, dict) and HASH in f for f in files.values()):
        raise CorruptArtifactError(f"artifact {path}: {META} lists no full checksums (damaged?); {fix}")
    if meta.get("meta_" + HASH) != _meta_hash(meta):
        raise CorruptArtifactError(f"artifact {path}: {META} does not match its own checksum (damaged); {fix}")
    verified, changed, started = ({} if full else _verified(path)), False, time.perf_counter()
    for name, stamp in files.items():
        target = path / name
        if not target.is_file():
            raise CorruptArtifactError(f"artifact {path}: {name} is missing; {fix}")
        identity = _identity(target)
        if verified.get(name) == {"identity": identity, HASH: stamp[HASH]}:
            continue
        if identity[2] != stamp["bytes"] or file_hash(target) != stamp[HASH]:
            raise CorruptArtifactError(f"artifact {path}: {name} does not match its checksum (damaged); {fix}")
        verified[name], changed = {"identity": identity, HASH: stamp[HASH]}, True
    if changed:
        seconds = time.perf_counter() - started
        log.log(logging.INFO if seconds > 1 else logging.DEBUG, "verified %s in full (%.1f s)", path, seconds)
        _record_verified(path, {n: v for n, v in verified.items() if n in files})
    return meta


def is_valid(path: Path) -> bool:
    """Whether a finished, undamaged artifact is at ``path`` (damage is logged)."""
    if not path.exists():
        return False
    try:
        check(path)
        return True
    except CorruptArtifactError as err:
        log.warning("%s; it will be rebuilt", str(err).split("; delete ")[0])
        return False


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock for building the artifact at ``path``.

    An flock on ``<cache>/locks/<kind>-<key>.lock``: released by the OS if the holder dies,
    so a stale lock never blocks a later build.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent.parent / "locks" / f"{path.parent.name}-{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent builders may both build; the rename keeps one
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _finish(tmp: Path, meta: dict) -> None:
    """Hash every file of a finished build into ``meta.json``, and record them as verified."""
    names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name not in (META, VERIFIED))
    for name in names:
        os.chmod(tmp / name, FILE_MODE)  # before hashing: a chmod changes the ctime of the identity
    files = {name: file_stamp(tmp / name) for name in names}
    full = json.loads(json.dumps({**meta, "files": files}, default=str))  # the hash covers what is read back
    full["meta_" + HASH] = _meta_hash(full)
    (tmp / META).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp / META, FILE_MODE)
    _record_verified(tmp, {name: {"identity": _identity(tmp / name), HASH: files[name][HASH]} for name in names})


def publish(path: Path, build: Callable[[Path], dict | None], meta: dict) -> dict:
    """Build the artifact at ``path`` in a temporary folder and rename it into place.

    The caller holds :func:`locked` for ``path``. ``build(tmp_dir)`` fills the folder and may
    return extra meta entries; checksums are added to ``meta.json``. Returns the verified meta.
    """
    if path.exists():
        log.warning("rebuilding %s", path)
        shutil.rmtree(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building."))
    try:
        extra = build(tmp) or {}
        _finish(tmp, {**meta, **extra})
        os.chmod(tmp, DIR_MODE)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check(path)


def ensure(path: Path, build: Callable[[Path], dict | None], meta: dict) -> dict:
    """The artifact at ``path``, built by ``build(tmp_dir)`` under its lock if missing or damaged.

    Concurrent callers wait on the lock and then reuse the first builder's artifact.
    Returns the verified meta.
    """
    if is_valid(path):
        return check(path)
    with locked(path):
        if is_valid(path):  # another process built it while we waited
            return check(path)
        return publish(path, build, meta)
