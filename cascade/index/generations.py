"""The folder of a saved index: its description, its generations, the switch between them, the writer lock.

::

    DIR/index.json        format version, the pipeline's settings, each stage's kind (written once)
    DIR/CURRENT           the name of the live generation's manifest, replaced atomically
    DIR/gen-00000007.json a generation: docstore extent, deletions, every stage's files and row counts
    DIR/docs.*  DIR/s<i>.*  the files the manifests name (append-only arrays, immutable files)
    DIR/LOCK              the writers' lock (flock); DIR/.verified.json  files already hashed

A writer appends rows past what the live generation names, writes the files that are new in the next
one, writes that generation's manifest, and then replaces ``CURRENT`` with :func:`os.replace` (as
Lucene's ``segments_N``): killed at any instant, the folder is the old generation or the new one.
Only after the switch does :func:`cleanup` delete what no longer belongs to the live generation.
Readers follow ``CURRENT`` once, when they open, and keep that snapshot. JSON files carry an
xxh3-128 of their own content. Written and read by this module alone.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cascade.core.errors import CascadeError, CorruptArtifactError, DataError
from cascade.core.files import atomic_path
from cascade.index.crashpoints import crash_point

log = logging.getLogger(__name__)

FORMAT = "cascade-saved-index"
FORMAT_VERSION = 1
INDEX, CURRENT, LOCK = "index.json", "CURRENT", "LOCK"
SELF_HASH = "self_xxh3_128"
# names cleanup may delete when no generation uses them: manifests, docstore and stage files, temporary files
OWN_NAMES = re.compile(r"^(gen-\d+\.json|docs\..+|s\d+\..+|\..+\.tmp)$")
KEEP = {INDEX, CURRENT, LOCK, ".verified.json"}


def manifest_name(generation: int) -> str:
    return f"gen-{generation:08d}.json"


def _digest(obj: dict) -> str:
    import xxhash

    body = {k: v for k, v in obj.items() if k != SELF_HASH}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` with its own hash, atomically and synced."""
    full = json.loads(json.dumps(obj))
    full[SELF_HASH] = _digest(full)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(full, indent=1) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_dir(path.parent)


def read_json(path: Path) -> dict:
    """A JSON file written by :func:`write_json`, its hash checked."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(f"saved index {path.parent}: {path.name} is unreadable ({err}); restore the "
                                   "folder from a copy") from None
    if not isinstance(obj, dict) or obj.get(SELF_HASH) != _digest(obj):
        raise CorruptArtifactError(f"saved index {path.parent}: {path.name} does not match its checksum "
                                   "(damaged); restore the folder from a copy")
    return obj


def read_index(root: Path) -> dict:
    """``index.json``, after checking that ``root`` is a saved index this cascade can read."""
    root = Path(root)
    made = "save one with pipe.index(corpus).save(DIR) or `cascade index ... --out DIR`"
    if not root.is_dir():
        raise DataError(f"{root} does not exist or is not a folder; give the folder of a saved index ({made})")
    if not (root / INDEX).is_file():
        raise DataError(f"{root} is not a cascade index: it has no {INDEX} (a saved index holds {INDEX}, "
                        f"{CURRENT} and gen-*.json files); {made}")
    meta = read_json(root / INDEX)
    if meta.get("format") != FORMAT:
        raise DataError(f"{root / INDEX} is not a cascade index description (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{root} was written by a newer cascade (index format version {version}; this cascade "
                        f"reads up to {FORMAT_VERSION}); upgrade cascade to open it")
    if not (root / CURRENT).is_file():
        raise DataError(f"{root} is not a usable index: it has no {CURRENT} file naming its live generation "
                        f"(its first save did not finish); save it again")
    return meta


def current(root: Path) -> int:
    """The number of the live generation (from ``CURRENT``)."""
    text = (Path(root) / CURRENT).read_text(encoding="utf-8").strip()
    if not (text.startswith("gen-") and text.endswith(".json") and text[4:-5].isdigit()):
        raise CorruptArtifactError(f"saved index {root}: {CURRENT} holds {text[:40]!r}, not a generation's name")
    return int(text[4:-5])


def read_manifest(root: Path, generation: int) -> dict:
    path = Path(root) / manifest_name(generation)
    manifest = read_json(path)
    if manifest.get("generation") != generation:
        raise CorruptArtifactError(f"saved index {root}: {path.name} describes generation "
                                   f"{manifest.get('generation')}")
    return manifest


def commit(root: Path, manifest: dict) -> None:
    """Write the manifest of a new generation, then make it the live one (the atomic switch)."""
    root = Path(root)
    name = manifest_name(manifest["generation"])
    write_json(root / name, manifest)
    crash_point("manifest written")
    with atomic_path(root / CURRENT) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("CURRENT written, not yet swapped")
    _fsync_dir(root)
    crash_point("CURRENT swapped")


def referenced(manifest: dict) -> set[str]:
    """Top-level names in the folder that ``manifest`` uses (every ``file`` entry, at any depth)."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                found.add(node["file"].split("/")[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(manifest)
    return found | {manifest_name(manifest["generation"])}


def cleanup(root: Path, manifest: dict) -> None:
    """Delete what the live generation does not use: older manifests and files, a killed writer's leftovers."""
    root, keep = Path(root), referenced(manifest) | KEEP
    unused = [e for e in sorted(root.iterdir()) if e.name not in keep and OWN_NAMES.match(e.name)]
    for i, entry in enumerate(unused):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if i in (0, len(unused) - 1):  # killed with some of them deleted, and with all
            crash_point(f"cleanup {entry.name}")


@contextmanager
def writer_lock(root: Path, timeout: float | None = 60.0) -> Iterator[None]:
    """Hold ``DIR/LOCK`` exclusively (flock, released by the OS if the holder dies).

    A second writer waits up to ``timeout`` seconds (None: forever), then fails naming the holder.
    """
    import fcntl

    path = Path(root) / LOCK
    with open(path, "a+", encoding="utf-8") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise CascadeError(f"another process ({holder}) is writing to the index {root} and did not "
                                       f"finish within {timeout:g} s; wait for it, or give a longer timeout") from None
                time.sleep(0.05)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
