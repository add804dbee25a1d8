"""Publish one large artifact through ``cascade.index.store`` (random bytes in a .npy), to measure full
verification of an index as large as the 1M-document study's (23 GB) on this disk.

    python experiments/verify_cost/make_large.py /work/verify_large --gb 23
    python experiments/verify_cost/run.py /work/verify_large --cold --out experiments/verify_cost/results_23gb_cold.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cascade.index import store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--gb", type=float, default=23.0)
    args = ap.parse_args()
    rows, width = int(args.gb * 1e9) // 64, 64  # like a 2-bit residual index: uint8 rows
    path = store.artifact_dir(args.root, "verify_large", gb=args.gb)

    def build(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp / "residuals.npy", mode="w+", dtype=np.uint8, shape=(rows, width))
        rng, step = np.random.default_rng(0), 1 << 24
        for s in range(0, rows, step):
            n = min(step, rows - s)
            out[s:s + n] = rng.integers(0, 256, (n, width), dtype=np.uint8)
        out.flush()
        del out

    store.ensure(path, build, {"kind": "verify_large", "gb": args.gb})
    print(path)


if __name__ == "__main__":
    main()
