"""What full verification of cached artifacts costs: hash throughput against the disk's read bound.

For each artifact folder (a cache folder holding several, or one artifact), in one process:

* ``read``: every file read in 8 MiB blocks without hashing (the bound any full check shares);
* ``full``: ``store.check(path, full=True)``, xxh3-128 over every byte (what the first load after a
  write or copy, and ``cascade verify --all``, pay);
* ``stat``: ``store.check(path)`` again, the identity recorded as verified (what every later load pays);
* ``sampled``: the old check, sha256 of 64 sampled 64 KiB blocks per file (kept only to upgrade
  artifacts built before full checksums), for comparison.

``--cold`` drops the page cache before each read and full pass (needs root: writes
/proc/sys/vm/drop_caches), so both read from the disk; otherwise the files are read once first and
both passes are warm (memory bandwidth and the hash itself).

    python experiments/verify_cost/run.py /work/cache --cold --out experiments/verify_cost/results_scifact.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from cascade.app.verify_cmd import artifacts
from cascade.index import store

_READ = 8 << 20


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_all(paths: list[Path]) -> int:
    buffer, total = bytearray(_READ), 0
    for p in paths:
        with p.open("rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                total += n
    return total


def hash_rates(size: int = 256 << 20) -> dict:
    """GB/s of each hash over one in-memory buffer (no I/O): xxh3-128 (what meta.json records), BLAKE3
    where installed, and sha256 (the old sampled stamp's)."""
    import hashlib

    import xxhash

    data = os.urandom(size)
    hashes = {"xxh3_128": lambda b: xxhash.xxh3_128(b).digest(), "sha256": lambda b: hashlib.sha256(b).digest()}
    try:
        import blake3

        hashes["blake3 (1 thread)"] = lambda b: blake3.blake3(b).digest()
    except ImportError:
        pass
    out = {}
    for name, fn in hashes.items():
        fn(data[:1 << 20])
        out[name] = size / 1e9 / timed(lambda fn=fn: fn(data))
    return out


def files_of(art: Path) -> list[Path]:
    return [art / name for name in store.read_meta(art)["files"]]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a cache folder or one artifact")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before the read and full passes")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    arts = artifacts(args.root)
    files = [f for a in arts for f in files_of(a)]
    size = sum(f.stat().st_size for f in files)
    cold = args.cold and drop_caches()
    if args.cold and not cold:
        raise SystemExit("--cold needs root (writing /proc/sys/vm/drop_caches failed)")
    if not cold:
        read_all(files)  # warm the page cache
    load0 = os.getloadavg()
    t_read = timed(lambda: read_all(files))
    if cold:
        drop_caches()
    t_full = timed(lambda: [store.check(a, full=True) for a in arts])
    t_stat = timed(lambda: [store.check(a) for a in arts])
    t_sampled = timed(lambda: [store._sampled_stamp(f) for f in files])
    gb = size / 1e9
    rates = hash_rates()
    report = {"hash_gb_s_in_memory": rates,
        "root": str(args.root), "artifacts": len(arts), "files": len(files), "bytes": size, "cold": cold,
        "read_s": t_read, "read_gb_s": gb / t_read, "full_s": t_full, "full_gb_s": gb / t_full,
        "full_over_read": t_full / t_read, "stat_s": t_stat, "sampled_s": t_sampled,
        "load_avg_start": list(load0), "load_avg_end": list(os.getloadavg()),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
