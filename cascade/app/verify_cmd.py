"""``cascade verify [DIR] [--all]``: check every cached artifact against its checksums.

Every load already hashes a file in full the first time it sees it in its current identity
(:mod:`cascade.index.store`). ``cascade verify`` does the same for every artifact under the
cache (or ``DIR``) ahead of time; ``--all`` rehashes every file even if already verified, which
also finds damage that no write explains (bit rot on the disk). Exit status 1 if any artifact
is damaged, with the folders to delete.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cascade.app.tables import markdown_table
from cascade.core.errors import CorruptArtifactError
from cascade.index import store

USAGE = """usage: cascade verify [DIR] [--all]

  DIR     a cache folder or one artifact (default: $CASCADE_CACHE_DIR, else ~/.cache/cascade)
  --all   rehash every file, also those already verified in their current identity
"""


@dataclass(frozen=True)
class Verified:
    path: Path
    files: int
    bytes: int
    seconds: float
    error: str | None


def artifacts(root: Path) -> list[Path]:
    """Every finished artifact folder (one holding ``meta.json``) under ``root``, sorted."""
    if (root / store.META).is_file():
        return [root]
    return sorted(
        p.parent
        for p in root.rglob(store.META)
        if not any(part.startswith(".") or part.endswith(".partial") for part in p.parent.relative_to(root).parts)
    )


def verify(root: Path, full: bool = False) -> list[Verified]:
    """Check each artifact under ``root`` (``full``: rehash every file)."""
    out = []
    for path in artifacts(root):
        start = time.perf_counter()
        try:
            meta = store.check(path, full=full)
            files = meta["files"]
            out.append(Verified(path, len(files), sum(int(f["bytes"]) for f in files.values()),
                                time.perf_counter() - start, None))
        except CorruptArtifactError as err:
            out.append(Verified(path, 0, 0, time.perf_counter() - start, str(err)))
    return out


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    full = "--all" in args
    rest = [a for a in args if a != "--all"]
    if len(rest) > 1 or any(a.startswith("-") for a in rest):
        print(USAGE, file=sys.stderr)
        return 2
    root = Path(rest[0]).expanduser() if rest else store.resolve_cache_dir(None)
    if not root.is_dir():
        print(f"error: {root} is not a folder (a cache folder or an artifact)", file=sys.stderr)
        return 2
    results = verify(root, full)
    rows = [{"artifact": str(r.path.relative_to(root)) if r.path != root else str(r.path), "files": r.files,
             "bytes": r.bytes, "seconds": round(r.seconds, 3), "status": "ok" if r.error is None else "DAMAGED"}
            for r in results]
    print(markdown_table(rows) if rows else f"no artifacts under {root}")
    total = sum(r.bytes for r in results)
    seconds = sum(r.seconds for r in results)
    print(f"\n{len(results)} artifacts, {total / 1e9:.2f} GB, {seconds:.1f} s"
          + (f" ({total / seconds / 1e9:.2f} GB/s)" if seconds > 0 and full else ""))
    damaged = [r for r in results if r.error is not None]
    for r in damaged:
        print(f"error: {r.error}", file=sys.stderr)
    return 1 if damaged else 0
