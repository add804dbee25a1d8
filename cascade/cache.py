"""Content-addressed artifact cache: ``<cache_dir>/<kind>/<key>/`` with .npy arrays and meta.json.

Directories are built under a temporary name and renamed into place, so a crash
never leaves a half-written artifact where a later run would load it.
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
from typing import Any, Iterator

log = logging.getLogger(__name__)

META = "meta.json"
DEFAULT_CACHE_DIR = "~/.cache/cascade"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


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


def is_complete(path: Path) -> bool:
    return (path / META).is_file()


def read_meta(path: Path) -> dict:
    return json.loads((path / META).read_text(encoding="utf-8"))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def build_dir(final: Path, meta: dict) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success write ``meta.json`` and rename it to ``final``.

    If another process finished the same artifact first, its copy is kept and ours discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building."))
    try:
        yield tmp
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            log.info("artifact %s was built concurrently; keeping the existing copy", final)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
