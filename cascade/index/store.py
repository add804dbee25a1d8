"""The content-addressed artifact store: ``<cache_dir>/<kind>/<key>/`` with .npy arrays and meta.json.

One discipline for every writer:

* the key hashes content only (corpus fingerprint, model content hash, settings), never paths;
* an artifact is built in a temporary folder and renamed into place, under a per-artifact
  lock (``<cache>/locks/``), so concurrent processes wait for the builder and then reuse its work;
* ``meta.json`` records each file's size and a hash of evenly spaced blocks of it, checked at
  every load (cheap: at most 4 MiB read per file); a damaged artifact is rebuilt by
  :func:`ensure`, or reported with the folder to delete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cascade.core.errors import CorruptArtifactError
from cascade.core.files import DIR_MODE, FILE_MODE

log = logging.getLogger(__name__)

META = "meta.json"
DEFAULT_CACHE_DIR = "~/.cache/cascade"
_BLOCK = 1 << 16
_BLOCKS = 64


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache root: the given path, else $CASCADE_CACHE_DIR, else ~/.cache/cascade."""
    root = cache_dir or os.environ.get("CASCADE_CACHE_DIR") or DEFAULT_CACHE_DIR
    return Path(root).expanduser()


def cache_key(**parts: Any) -> str:
    """A short stable hash of the settings that determine an artifact."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def artifact_dir(cache_dir: str | os.PathLike | None, kind: str, **parts: Any) -> Path:
    """Where the artifact of ``kind`` for these settings lives (it may not exist yet)."""
    return resolve_cache_dir(cache_dir) / kind / cache_key(**parts)


def file_stamp(path: Path) -> dict:
    """Size and a hash of up to 64 evenly spaced 64 KiB blocks (the whole file when small)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= _BLOCK * _BLOCKS:
            digest.update(handle.read())
        else:
            step = (size - _BLOCK) // (_BLOCKS - 1)
            for i in range(_BLOCKS):
                handle.seek(i * step)
                digest.update(handle.read(_BLOCK))
    return {"bytes": size, "sample_sha256": digest.hexdigest()}


def read_meta(path: Path) -> dict:
    return json.loads((path / META).read_text(encoding="utf-8"))


def is_complete(path: Path) -> bool:
    return (path / META).is_file()


def check(path: Path) -> dict:
    """The verified ``meta.json`` of the artifact at ``path``; :class:`CorruptArtifactError` if damaged."""
    fix = f"delete {path} and run again to rebuild it"
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        raise CorruptArtifactError(f"artifact {path} has no {META} (unfinished or damaged); {fix}") from None
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(f"artifact {path}: unreadable {META} ({err}); {fix}") from None
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CorruptArtifactError(f"artifact {path}: {META} lists no file checksums (old format?); {fix}")
    for name, stamp in files.items():
        target = path / name
        if not target.is_file():
            raise CorruptArtifactError(f"artifact {path}: {name} is missing; {fix}")
        if file_stamp(target) != stamp:
            raise CorruptArtifactError(f"artifact {path}: {name} does not match its checksum (damaged); {fix}")
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
    files = {p.name: file_stamp(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != META}
    (tmp / META).write_text(json.dumps({**meta, "files": files}, indent=2, default=str) + "\n", encoding="utf-8")
    for p in tmp.iterdir():
        os.chmod(p, FILE_MODE)


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
